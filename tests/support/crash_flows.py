"""Workflows for the crash tests (tests/test_crash_recovery.py). Every step appends
"start:<name>" when it begins and "done:<name>" when it ends to the file named in its input
(`log`), so a test can tell a step that ran once from one that was started again after a
SIGKILL, and one that completed from one that was cut short."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.flows_extra import logs, twice_failing
from tests.support.workflows import record
from waystation import StepContext, create_step, create_workflow


def _timed(name: str) -> Any:
    """A step that records start:<name>, sleeps `seconds` (only B does), records done:<name>."""

    async def execute(ctx: StepContext) -> dict[str, Any]:
        data = ctx.input_data
        record(data["log"], f"start:{name}")
        if name == "B":
            await asyncio.sleep(data["seconds"])
        record(data["log"], f"done:{name}")
        return {**data, "ran": [*data.get("ran", []), name]}

    return execute


# A (instant) -> B (sleeps `seconds`); input {log, seconds}; output adds ran: ["A", "B"]
two_steps = (
    create_workflow(id="crash-two-steps")
    .then(create_step(id="A", execute=_timed("A")))
    .then(create_step(id="B", execute=_timed("B")))
    .commit()
)


async def _tells_context(ctx: StepContext) -> dict[str, Any]:
    """B of `crash-context`: as B of `crash-two-steps`, but returns the request context."""
    data = ctx.input_data
    record(data["log"], "start:B")
    await asyncio.sleep(data["seconds"])
    record(data["log"], "done:B")
    return {"context": ctx.request_context}


# A (instant) -> B (sleeps `seconds`); input {log, seconds}; output {context: the request
# context B ran with}
context_steps = (
    create_workflow(id="crash-context")
    .then(create_step(id="A", execute=_timed("A")))
    .then(create_step(id="B", execute=_tells_context))
    .commit()
)


async def _item(ctx: StepContext) -> dict[str, Any]:
    item = ctx.input_data
    index = int(item["i"])  # JSON numbers arrive as floats
    record(item["log"], f"start:{index}")
    await asyncio.sleep(item["seconds"])
    record(item["log"], f"done:{index}")
    return {"i": index}


# foreach over [{log, i, seconds}] at concurrency 2: records start:i, sleeps, records done:i;
# output [{i}, ...] in input order
items_2 = (
    create_workflow(id="crash-items-2")
    .foreach(create_step(id="item", execute=_item), concurrency=2)
    .commit()
)


_before = logs("before")
_woke = logs("woke", {"woke": True})


# before (records "before") -> sleep 3 s ("nap") -> woke (records "woke")
nap_3 = (
    create_workflow(id="crash-nap-3")
    .then(create_step(id="before", execute=_before))
    .sleep(3, id="nap")
    .then(create_step(id="woke", execute=_woke))
    .commit()
)


async def _broken(ctx: StepContext) -> None:
    record(ctx.input_data["log"], "broken")
    raise RuntimeError("broken for good")


_napper = (
    create_workflow(id="napper")
    .sleep(3, id="nap")
    .then(create_step(id="woke", execute=_woke))
    .commit()
)

# parallel: "napper" sleeps 3 s, "broken" (records "broken") fails at once: the run is
# WAITING with a FAILED step until the sleep ends, then fails
broken_beside_a_nap = (
    create_workflow(id="crash-broken-beside-a-nap")
    .parallel([_napper, create_step(id="broken", execute=_broken)])
    .commit()
)


# a step that fails at attempts 0 and 1 and succeeds at 2, with 2 s between attempts
slow_retries = (
    create_workflow(id="crash-slow-retries", retry_config={"attempts": 2, "delay": 2})
    .then(create_step(id="flaky", execute=twice_failing))
    .commit()
)


def _napping(name: str, seconds: float) -> Any:
    async def woke(ctx: StepContext) -> dict[str, Any]:
        record(ctx.input_data["log"], f"woke:{name}")
        return {"woke": name}

    return (
        create_workflow(id=f"nap-{name}")
        .sleep(seconds, id="nap")
        .then(create_step(id="woke", execute=woke))
        .commit()
    )


# parallel: "nap-short" sleeps 0.5 s, "nap-long" 4 s, each then records woke:<name>
two_naps = (
    create_workflow(id="crash-two-naps")
    .parallel([_napping("short", 0.5), _napping("long", 4)])
    .commit()
)
