"""Workflows with every control-flow shape, for the control-flow tests. Steps append their
side effects to the file named in the input (`log`) where there is one; otherwise they count
in the run's state."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field

from tests.support.workflows import record
from waystation import StepContext, create_step, create_workflow


class Approve(BaseModel):
    ok: bool


class Amount(BaseModel):
    amount: int = Field(ge=0)


def _asker(step_id: str, label: str | None = None) -> Any:
    async def execute(ctx: StepContext) -> dict[str, Any]:
        if ctx.resume_data is None:
            ctx.suspend({"asked": step_id}, resume_label=label)
        if isinstance(ctx.input_data, dict) and "log" in ctx.input_data:
            record(ctx.input_data["log"], step_id)
        return {"step": step_id, "ok": ctx.resume_data.ok}

    return execute


def asker(step_id: str, label: str | None = None) -> Any:
    return create_step(id=step_id, resume_schema=Approve, execute=_asker(step_id, label))


async def _after(ctx: StepContext) -> dict[str, Any]:
    return {"after": ctx.input_data}


# parallel a, b (both suspend) -> after: output {"after": {"a": ..., "b": ...}}
two_approvals = (
    create_workflow(id="two-approvals")
    .parallel([asker("a", "label-a"), asker("b", "label-b")])
    .then(create_step(id="after", execute=_after))
    .commit()
)


# first suspends, then second: two approvals one after the other
two_stages = create_workflow(id="two-stages").then(asker("first")).then(asker("second")).commit()


# parallel one, two: both suspend with the one label "same"
same_label = (
    create_workflow(id="same-label").parallel([asker("one", "same"), asker("two", "same")]).commit()
)


def _is(kind: str) -> Any:
    def condition(ctx: StepContext) -> bool:
        return bool(ctx.input_data["kind"] == kind)

    return condition


async def _cheap(ctx: StepContext) -> dict[str, Any]:
    return {"cheap": True}


# branch: "big" -> big-approval (suspends), "small" -> cheap; both arms may hold
routing = (
    create_workflow(id="routing")
    .branch(
        [
            (_is("big"), asker("big-approval")),
            (_is("small"), create_step(id="cheap", execute=_cheap)),
        ]
    )
    .then(create_step(id="after", execute=_after))
    .commit()
)


async def _collect(ctx: StepContext) -> dict[str, Any]:
    total = ctx.input_data.get("total", 0)
    if ctx.resume_data is None:
        ctx.suspend({"total_so_far": total, "iteration": ctx.input_data.get("n", 0)})
    return {"total": total + ctx.resume_data.amount, "n": ctx.input_data.get("n", 0) + 1}


def _reached(ctx: StepContext) -> bool:
    return bool(ctx.input_data["total"] >= 10)


# dountil: collect asks for an amount on every iteration until the total reaches 10
collect_until = (
    create_workflow(id="collect-until")
    .dountil(create_step(id="collect", resume_schema=Amount, execute=_collect), _reached)
    .commit()
)


def _below(ctx: StepContext) -> bool:
    return bool(ctx.input_data["total"] < 10)


collect_while = (
    create_workflow(id="collect-while")
    .dowhile(create_step(id="collect", resume_schema=Amount, execute=_collect), _below)
    .commit()
)


async def _item(ctx: StepContext) -> dict[str, Any]:
    item = ctx.input_data
    if item.get("ask") and ctx.resume_data is None:
        ctx.suspend({"item": item["name"]}, resume_label=f"item-{item['name']}")
    if item.get("log"):
        record(item["log"], f"item:{item['name']}")
    return {"name": item["name"], "ok": ctx.resume_data.ok if ctx.resume_data else None}


def _items(concurrency: int) -> Any:
    return (
        create_workflow(id=f"items-{concurrency}")
        .foreach(
            create_step(id="item", resume_schema=Approve, execute=_item), concurrency=concurrency
        )
        .commit()
    )


# foreach over [{name, ask?, log?}]: items with ask suspend (label item-<name>)
items_1 = _items(1)
items_3 = _items(3)
items_400 = _items(400)  # one window: every item that asks waits at once

# nested workflow with a parallel inside: two inner suspensions
inner_pair = create_workflow(id="inner-pair").parallel([asker("left"), asker("right")]).commit()
outer_pair = (
    create_workflow(id="outer-pair")
    .then(inner_pair)
    .then(create_step(id="after", execute=_after))
    .commit()
)


async def _flaky(ctx: StepContext) -> dict[str, Any]:
    if ctx.resume_data is None:
        ctx.suspend({"need": "ok"})
    record(ctx.input_data["log"], f"attempt:{ctx.retry_count}:{ctx.resume_data.ok}")
    if ctx.retry_count < 1:
        raise RuntimeError("transient failure after resume")
    return {"ok": ctx.resume_data.ok, "retry_count": ctx.retry_count}


# flaky: suspends; on resume fails once, then succeeds on the retry with the same data
flaky = (
    create_workflow(id="flaky")
    .then(create_step(id="flaky", resume_schema=Approve, retries=2, execute=_flaky))
    .commit()
)


async def _refuses(ctx: StepContext) -> dict[str, Any]:
    if ctx.resume_data is None:
        ctx.suspend({"need": "ok"}, resume_label="refuse")
    raise RuntimeError("refused after resume")


# resume-fails: suspends (label "refuse"); once resumed it fails for good
resume_fails = (
    create_workflow(id="resume-fails")
    .then(create_step(id="refuses", resume_schema=Approve, execute=_refuses))
    .commit()
)


async def _log_step(ctx: StepContext) -> dict[str, Any]:
    record(ctx.input_data["log"], "woke")
    return ctx.input_data


def _sleepy(seconds: float) -> Any:
    return (
        create_workflow(id=f"sleepy-{int(seconds)}")
        .sleep(seconds, id="nap")
        .then(create_step(id="woke", execute=_log_step))
        .commit()
    )


# sleep 1 s / 3 s, then record "woke"
sleepy_1 = _sleepy(1)
sleepy_3 = _sleepy(3)
sleepy_60 = _sleepy(60)


async def _interruptible(ctx: StepContext) -> dict[str, Any]:
    try:
        await asyncio.sleep(ctx.input_data["seconds"])
    except asyncio.CancelledError:
        record(ctx.input_data["log"], "saw-cancel")
        raise
    record(ctx.input_data["log"], "finished")
    return {}


# waits `seconds`; records "saw-cancel" when canceled
interruptible = (
    create_workflow(id="interruptible")
    .then(create_step(id="wait", execute=_interruptible))
    .commit()
)


async def _double(ctx: StepContext) -> dict[str, Any]:
    record(ctx.input_data["log"], f"double:{ctx.input_data['x']}")
    return {"log": ctx.input_data["log"], "x": ctx.input_data["x"] * 2}


async def _plus(ctx: StepContext) -> dict[str, Any]:
    record(ctx.input_data["log"], f"plus:{ctx.input_data['x']}")
    return {"log": ctx.input_data["log"], "x": ctx.input_data["x"] + 1}


# double -> map(x+100) -> plus; for time travel
arithmetic = (
    create_workflow(id="arithmetic")
    .then(create_step(id="double", execute=_double))
    .map(lambda ctx: {**ctx.input_data, "x": ctx.input_data["x"] + 100}, id="shift")
    .then(create_step(id="plus", execute=_plus))
    .commit()
)
