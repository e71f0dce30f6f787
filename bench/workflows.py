"""The workflows the benchmark serves (`waystation serve --workflows bench.workflows`).

- `bench-cycle`: the measured cycle. Step 1 adds 1; step 2 suspends for an approval and reads
  `{approved, value}` on resume; step 3 returns the value.
- `bench-loop`: a `.dountil` loop whose body returns `{i: i + 1}` until `i == n`.
- `bench-foreach`: a `.foreach` over `n` items at concurrency 1.

The loop body and the foreach item record `time.perf_counter()` each time they run, in this
(server) process; a last step returns those times as the run's result. The gap between two
consecutive times is the whole cost of one iteration inside the engine (its commits, the
walk, the condition), with no gRPC in it, so the bench can compare the gap near the start
of a long run with the gap near its end.
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from waystation import StepContext, create_step, create_workflow

_TIMES: dict[str, list[float]] = {}
"""Per run id: when each loop iteration or foreach item ran (perf_counter seconds)."""

RECORD_TIMES = True
"""Off when the iterations' instructions are counted (`bench.instructions`): the report
then returns no times, so that a longer run's larger result does not count as iterations."""


class Value(BaseModel):
    value: int


class Approval(BaseModel):
    approved: bool
    value: int


async def _add(ctx: StepContext) -> Value:
    return Value(value=ctx.input_data.value + 1)


async def _approve(ctx: StepContext) -> Value:
    if ctx.resume_data is None:
        ctx.suspend(Value(value=ctx.input_data.value), resume_label="approval")
    answer: Approval = ctx.resume_data
    return Value(value=answer.value if answer.approved else 0)


async def _finish(ctx: StepContext) -> Value:
    return Value(value=ctx.input_data.value)


add = create_step(id="add", input_schema=Value, output_schema=Value, execute=_add)
approve = create_step(
    id="approve",
    input_schema=Value,
    output_schema=Value,
    suspend_schema=Value,
    resume_schema=Approval,
    execute=_approve,
)
finish = create_step(id="finish", input_schema=Value, output_schema=Value, execute=_finish)

cycle = (
    create_workflow(
        id="bench-cycle",
        description="add -> approve (suspends) -> finish",
        input_schema=Value,
        output_schema=Value,
    )
    .then(add)
    .then(approve)
    .then(finish)
    .commit()
)


class Counter(BaseModel):
    i: int
    n: int


class Times(BaseModel):
    times: list[float]


async def _tick(ctx: StepContext) -> Counter:
    if RECORD_TIMES:
        _TIMES.setdefault(ctx.run_id, []).append(time.perf_counter())
    counter: Counter = ctx.input_data
    return Counter(i=counter.i + 1, n=counter.n)


def _reached(ctx: StepContext) -> bool:
    return bool(ctx.input_data["i"] >= ctx.input_data["n"])


async def _report(ctx: StepContext) -> Times:
    return Times(times=_TIMES.pop(ctx.run_id, []))


tick = create_step(id="tick", input_schema=Counter, output_schema=Counter, execute=_tick)
loop_report = create_step(id="report", output_schema=Times, execute=_report)

loop = (
    create_workflow(
        id="bench-loop",
        description="dountil(tick, i >= n) -> report",
        input_schema=Counter,
        output_schema=Times,
    )
    .dountil(tick, _reached)
    .then(loop_report)
    .commit()
)


class Size(BaseModel):
    n: int


async def _item(ctx: StepContext) -> int:
    if RECORD_TIMES:
        _TIMES.setdefault(ctx.run_id, []).append(time.perf_counter())
    return int(ctx.input_data)


item = create_step(id="item", execute=_item)
foreach_report = create_step(id="report", output_schema=Times, execute=_report)

fanout = (
    create_workflow(
        id="bench-foreach",
        description="map(n -> [0..n)) -> foreach(item) -> report",
        input_schema=Size,
        output_schema=Times,
    )
    .map(lambda ctx: list(range(ctx.input_data["n"])), id="items")
    .foreach(item, concurrency=1)
    .then(foreach_report)
    .commit()
)
