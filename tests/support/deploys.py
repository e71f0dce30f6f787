"""Two deploys of the same workflows, for tests/test_redeploy.py: `build(1)` is what a
service deployed first, `build(2)` the same module after an edit. `deploy_v1` and
`deploy_v2` serve each. Every step appends its name to the file named by the input's `log`
and adds it to the input's `ran`; `ask` suspends until resumed with {ok}."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from tests.support.workflows import record
from waystation import StepContext, Workflow, create_step, create_workflow


class Approval(BaseModel):
    ok: bool


class Job(BaseModel):
    log: str
    ran: list[str] = []


class RegionalJob(Job):
    region: str  # a required field v2 adds


class Question(BaseModel):
    q: str


class RegionalQuestion(Question):
    region: str  # a required field v2 adds to a suspend payload


def _plain(name: str, input_schema: type[BaseModel] | None = None, seconds: float = 0) -> Any:
    async def execute(ctx: StepContext) -> dict[str, Any]:
        data = ctx.input_data
        data = data.model_dump() if isinstance(data, BaseModel) else data
        record(data["log"], name)
        await asyncio.sleep(seconds)
        return {**data, "ran": [*data.get("ran", []), name]}

    return create_step(id=name, input_schema=input_schema, execute=execute)


def _nested_needing_region() -> Workflow:
    return create_workflow(id="inside", input_schema=RegionalJob).then(_plain("z")).commit()


def _ask(
    name: str = "ask",
    input_schema: type[BaseModel] | None = None,
    timeout: float | None = None,
    on_timeout: Any = "fail",
    suspend_schema: type[BaseModel] | None = None,
) -> Any:
    async def execute(ctx: StepContext) -> dict[str, Any]:
        data = ctx.input_data
        data = data.model_dump() if isinstance(data, BaseModel) else data
        if ctx.resume_data is None:
            ctx.suspend({"q": name}, resume_label=name, timeout=timeout, on_timeout=on_timeout)
        record(data["log"], f"{name}:{ctx.resume_data.ok}")
        return {**data, "ran": [*data.get("ran", []), f"{name}:{ctx.resume_data.ok}"]}

    return create_step(
        id=name,
        input_schema=input_schema,
        suspend_schema=suspend_schema,
        resume_schema=Approval,
        execute=execute,
    )


def _fan() -> Any:
    async def execute(ctx: StepContext) -> list[dict[str, Any]]:
        return [{"log": ctx.input_data["log"], "ran": [str(i)]} for i in range(2)]

    return create_step(id="fan", execute=execute)


def _sequence(workflow_id: str, *steps: Any) -> Workflow:
    flow = create_workflow(id=workflow_id)
    for step in steps:
        flow = flow.then(step)
    return flow.commit()


def _always(ctx: StepContext) -> bool:
    return True


def _never(ctx: StepContext) -> bool:
    return False


def build(version: int) -> dict[str, Workflow]:
    a, ask, z = _plain("a"), _ask(), _plain("z")
    timed = _ask(timeout=3, on_timeout={"ok": False})
    v1 = version == 1
    inner = _sequence("inner-wf", _ask("inner" if v1 else "inner-renamed"))
    arms = [(_always, _plain("yes")), (_never, _plain("no"))]
    return {
        # v2 moves ask before a
        "reordered": _sequence("reordered", a, ask, z) if v1 else _sequence("reordered", ask, a, z),
        # v2 adds pre before ask
        "inserted": _sequence("inserted", a, ask, z)
        if v1
        else _sequence("inserted", a, _plain("pre"), ask, z),
        # v2 renames ask
        "renamed": _sequence("renamed", a, ask, z)
        if v1
        else _sequence("renamed", a, _ask("ask-renamed"), z),
        # v2 renames the step inside the nested workflow
        "nested": _sequence("nested", a, inner, z),
        # v2 adds z after ask: a change after the point a run reached applies to it
        "appended": _sequence("appended", a, ask) if v1 else _sequence("appended", a, ask, z),
        # v2 adds an arm to the branch before ask; conditions are not asked again
        "armed": create_workflow(id="armed")
        .branch(arms if v1 else [*arms, (_always, _plain("also"))], id="choose")
        .map(lambda ctx: next(iter(ctx.input_data.values())))
        .then(ask)
        .commit(),
        # v2's ask needs a region its stored input does not have
        "stricter": _sequence("stricter", a, _ask(input_schema=Job if v1 else RegionalJob)),
        # v2 moves ask, which resumes itself 3 s after it suspends, before a
        "timed-reordered": _sequence("timed-reordered", a, timed, z)
        if v1
        else _sequence("timed-reordered", timed, a, z),
        # unchanged: the run fails 4 s after ask suspends
        "timed": _sequence("timed", a, _ask(timeout=4)),
        # v2 runs ask in the items of a foreach
        "itemized": _sequence("itemized", a, ask)
        if v1
        else create_workflow(id="itemized").then(a).foreach(ask).commit(),
        # v2 runs ask, which v1 ran in the items of a foreach, once
        "unitemized": create_workflow(id="unitemized").then(_fan()).foreach(ask).commit()
        if v1
        else _sequence("unitemized", _fan(), ask),
        # v2's nested workflow, and the foreach's item step, need a region
        "finished": create_workflow(id="finished")
        .then(_fan())
        .foreach(_plain("each", Job if v1 else RegionalJob))
        .map(lambda ctx: ctx.input_data[0])
        .then(_sequence("inside", _plain("z")) if v1 else _nested_needing_region())
        .commit(),
        # v2 drops b: the sleep's id, given by its position, changes from sleep-3 to sleep-2
        "slept": create_workflow(id="slept")
        .then(a)
        .then(_plain("b"))
        .sleep(0.01)
        .then(ask)
        .commit()
        if v1
        else create_workflow(id="slept").then(a).sleep(0.01).then(ask).commit(),
        # v2 adds x before the 3 s nap (which has an id: it is not renamed)
        "dozing": create_workflow(id="dozing").then(a).sleep(3, id="nap").then(z).commit()
        if v1
        else create_workflow(id="dozing")
        .then(a)
        .then(_plain("x"))
        .sleep(3, id="nap")
        .then(z)
        .commit(),
        # v2 adds pre before b in the nested workflow the run waits in
        "deepened": _sequence(
            "deepened",
            _sequence("deep", _plain("b"), ask)
            if v1
            else _sequence("deep", _plain("pre"), _plain("b"), ask),
        ),
        # v2 adds p3 to the parallel the run has passed
        "widened": create_workflow(id="widened")
        .parallel(
            [_plain("p1"), _plain("p2")] if v1 else [_plain("p1"), _plain("p2"), _plain("p3")],
            id="par",
        )
        .map(lambda ctx: ctx.input_data["p1"], id="pick")
        .then(ask)
        .commit(),
        # v2's suspend schema needs a region the stored suspend payload lacks
        "questioned": _sequence(
            "questioned", a, _ask(suspend_schema=Question if v1 else RegionalQuestion)
        ),
        # v2 makes ask a nested workflow
        "nestified": _sequence("nestified", a, ask, z)
        if v1
        else _sequence("nestified", a, _sequence("ask", _plain("inner-step")), z),
        # a process dies while work runs (a minute); v2 renames work
        "working": _sequence("working", a, _plain("work", seconds=60), z)
        if v1
        else _sequence("working", a, _plain("work2"), z),
        # the run sleeps in nap (a minute); v2 renames the sleep
        "sleeping": create_workflow(id="sleeping").then(a).sleep(60, id="nap").then(z).commit()
        if v1
        else create_workflow(id="sleeping").then(a).sleep(0.01, id="nap2").then(z).commit(),
        # v2 no longer serves it
        **(
            {"napping": create_workflow(id="napping").sleep(30, id="nap").then(z).commit()}
            if v1
            else {}
        ),
    }
