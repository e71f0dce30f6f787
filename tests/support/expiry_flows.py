"""Workflows whose suspensions expire, for the resume-expiry tests. Every execution of a step
appends a line to the file named in the input (`log`), so tests count how often each step
ran, also across processes killed with SIGKILL:

    decide:run            every execution of decide (the first, and each resumed one)
    decide:resumed:<v>    decide continued with resume data {"value": v}
    after:<v>             the step after decide ran on value v

Input of the single-step flows: {"log", "seconds" (the timeout), "on_timeout": "fail" or
"default", "default" (the value resumed with on timeout, -1 unless given)}.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from tests.support.workflows import Value, record
from waystation import StepContext, create_step, create_workflow


class Expiring(BaseModel):
    log: str
    seconds: float
    on_timeout: Literal["fail", "default"] = "default"
    default: int = -1


def _on_timeout(data: Expiring) -> Any:
    return "fail" if data.on_timeout == "fail" else {"value": data.default}


async def _decide(ctx: StepContext) -> dict[str, Any]:
    data: Expiring = ctx.input_data
    record(data.log, "decide:run")
    if ctx.resume_data is None:
        ctx.suspend({"deciding": True}, timeout=data.seconds, on_timeout=_on_timeout(data))
    record(data.log, f"decide:resumed:{ctx.resume_data.value}")
    return {"log": data.log, "value": ctx.resume_data.value}


async def _after(ctx: StepContext) -> dict[str, Any]:
    record(ctx.input_data["log"], f"after:{ctx.input_data['value']}")
    return {"decided": ctx.input_data["value"], "checked": True}


decide = create_step(id="decide", input_schema=Expiring, resume_schema=Value, execute=_decide)
after = create_step(id="after", execute=_after)

# decide (suspends with a timeout) -> after: output {"decided": value, "checked": true}
expiry_logged = (
    create_workflow(id="expiry-logged", input_schema=Expiring).then(decide).then(after).commit()
)

# the same inside a nested workflow: expiry-outer [expiry-inner [decide]] -> after
expiry_inner = create_workflow(id="expiry-inner", input_schema=Expiring).then(decide).commit()
expiry_outer = (
    create_workflow(id="expiry-outer", input_schema=Expiring)
    .then(expiry_inner)
    .then(after)
    .commit()
)


def _branch(step_id: str, factor: float) -> Any:
    async def execute(ctx: StepContext) -> dict[str, Any]:
        data: Expiring = ctx.input_data
        record(data.log, f"{step_id}:run")
        if ctx.resume_data is None:
            ctx.suspend(
                {"branch": step_id},
                timeout=data.seconds * factor,
                on_timeout=_on_timeout(data),
            )
        record(data.log, f"{step_id}:resumed:{ctx.resume_data.value}")
        return {"value": ctx.resume_data.value}

    return create_step(id=step_id, input_schema=Expiring, resume_schema=Value, execute=execute)


# parallel left (timeout seconds) and right (timeout 2 x seconds): both expire
expiry_pair = (
    create_workflow(id="expiry-pair", input_schema=Expiring)
    .parallel([_branch("left", 1.0), _branch("right", 2.0)])
    .commit()
)

# parallel soon (timeout seconds) and late (timeout 6 x seconds): soon expires well first
expiry_apart = (
    create_workflow(id="expiry-apart", input_schema=Expiring)
    .parallel([_branch("soon", 1.0), _branch("late", 6.0)])
    .commit()
)


async def _woke(ctx: StepContext) -> dict[str, Any]:
    record(ctx.input_data["log"], "woke")
    return {"woke": True}


# parallel soon (timeout seconds) beside the nested workflow nap-then-wake [long-nap sleeps
# 4 s, then woke logs "woke"]: soon's timeout passes while the run is WAITING
expiry_beside_a_nap = (
    create_workflow(id="expiry-beside-a-nap", input_schema=Expiring)
    .parallel(
        [
            _branch("soon", 1.0),
            create_workflow(id="nap-then-wake")
            .sleep(4, id="long-nap")
            .then(create_step(id="woke", execute=_woke))
            .commit(),
        ]
    )
    .commit()
)


class Item(BaseModel):
    log: str
    seconds: float
    n: int


async def _item(ctx: StepContext) -> dict[str, Any]:
    item: Item = ctx.input_data
    record(item.log, f"item:{item.n}:run")
    if ctx.resume_data is None:
        ctx.suspend({"item": item.n}, timeout=item.seconds, on_timeout={"value": item.n * 10})
    record(item.log, f"item:{item.n}:resumed:{ctx.resume_data.value}")
    return {"n": item.n, "value": ctx.resume_data.value}


# foreach over [{log, seconds, n}] at concurrency 3: each item suspends, and on timeout
# resumes with {"value": n * 10}
expiry_items = (
    create_workflow(id="expiry-items")
    .foreach(
        create_step(id="item", input_schema=Item, resume_schema=Value, execute=_item),
        concurrency=3,
    )
    .commit()
)


async def _bad_default(ctx: StepContext) -> None:
    ctx.suspend({"bad": True}, timeout=5.0, on_timeout={"value": "not a number"})


# a default that does not match the resume schema: the step fails when it suspends
expiry_bad_default = (
    create_workflow(id="expiry-bad-default")
    .then(create_step(id="bad", resume_schema=Value, execute=_bad_default))
    .commit()
)
