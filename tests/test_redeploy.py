"""A deploy that changes workflows while runs wait in them (docs/workflows.md, "Changing a
workflow while runs wait").

A server serves `tests.support.deploy_v1`; runs are started and suspended; the server is
stopped and another serves `deploy_v2` (the same workflow ids, edited) on the same SQLite
file. A change before the point a run had reached is refused on resume, FAILED_PRECONDITION
WORKFLOW_CHANGED, before anything changes: no step runs, and the run resumes once the old
deploy is back. A change after that point applies to the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.api import RichError, assert_eventually, call_error, to_json, value
from tests.support.server_process import ServerProcess, serving
from tests.support.workflows import lines
from waystation.api.v1 import enums_pb2, message_pb2
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub as Stub

RUN = enums_pb2.RunStatus


@asynccontextmanager
async def deployed(db: Path, version: int) -> AsyncIterator[Stub]:
    """A server of `deploy_v<version>` on `db`, stopped (SIGTERM) on the way out."""
    server = ServerProcess(db, workflows=[f"tests.support.deploy_v{version}"])
    async with serving(server, graceful=True) as stub:
        yield stub


def start(stub: Stub, workflow_id: str, log: Path, run_id: str = "") -> Any:
    """StartRun of `workflow_id` (run id: the workflow's, unless given) logging to `log`."""
    request = rr.StartRunRequest(
        workflow_id=workflow_id, run_id=run_id or workflow_id, input_data=value({"log": str(log)})
    )
    return stub.StartRun(request, timeout=30)


def start_now(stub: Stub, workflow_id: str, log: Path) -> Any:
    """StartRun of `workflow_id` answered at once (the run goes on in the server)."""
    request = rr.StartRunRequest(
        workflow_id=workflow_id,
        run_id=workflow_id,
        input_data=value({"log": str(log)}),
        return_immediately=True,
    )
    return stub.StartRun(request, timeout=30)


async def started(stub: Stub, workflow_id: str, log: Path) -> str:
    """The run of `start`, once it is SUSPENDED."""
    run = await start(stub, workflow_id, log)

    async def suspended() -> bool:  # a run that sleeps first answers WAITING
        got = await stub.GetRun(rr.GetRunRequest(run_id=run.run_id))
        return bool(got.status == RUN.RUN_STATUS_SUSPENDED)

    await assert_eventually(suspended, timeout=10)
    return run.run_id


async def started_under_v1(db: Path, logs: dict[str, Path]) -> None:
    """A run of each workflow of `logs` (its id the workflow's), started under deploy v1
    until it is SUSPENDED."""
    async with deployed(db, 1) as stub:
        for name, log in logs.items():
            await started(stub, name, log)


def resume(stub: Stub, run_id: str, *step: str, validate_only: bool = False) -> Any:
    return stub.ResumeRun(
        rr.ResumeRequest(
            run_id=run_id,
            step=message_pb2.StepPath(segments=step) if step else None,
            resume_data=value({"ok": True}),
            validate_only=validate_only,
        ),
        timeout=20,
    )


def assert_changed(error: RichError, run_id: str, step: str, *words: str) -> None:
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "WORKFLOW_CHANGED")
    assert error.metadata == {"run_id": run_id, "workflow_id": run_id, "step_path": step}
    for word in ("as deployed now", "time-travel", *words):
        assert word in error.message, error.message


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "deploys.db"


async def test_steps_moved_or_added_before_a_suspended_step_refuse_its_resume(
    db: Path, tmp_path: Path
) -> None:
    """v2 moves `ask` before `a`, adds `pre` before `ask`, renames `ask`, and renames the
    step inside a nested workflow. Each resume is refused WORKFLOW_CHANGED, a dry run as
    well, naming the step; nothing runs and the run stays SUSPENDED. Deployed as it was,
    each run resumes and ends as it would have."""
    logs = {
        name: tmp_path / f"{name}.log"
        for name in ("reordered", "inserted", "renamed", "nested", "slept")
    }
    await started_under_v1(db, logs)
    async with deployed(db, 2) as stub:
        refusals = {
            "reordered": ("ask", "[a] has run", "has not finished"),
            "inserted": ("pre", "[ask] has run", "[pre] now comes before it and never ran"),
            "renamed": ("ask", "step [ask] waits in this run", "no such step"),
            "nested": ("inner-wf.inner", "step [inner-wf.inner] waits"),
        }
        for name, (step, *words) in refusals.items():
            for dry in (True, False):
                error = await call_error(resume(stub, name, validate_only=dry))
                assert_changed(error, name, step, *words)
            run = await stub.GetRun(rr.GetRunRequest(run_id=name))
            assert run.status == RUN.RUN_STATUS_SUSPENDED
        # An id given by position is named as such: here the sleep's changed with b gone.
        error = await call_error(resume(stub, "slept"))
        assert_changed(error, "slept", "sleep-2", "never ran", "[sleep-2]: an id given by position")
        # By its old path or its label: the same refusal.
        assert_changed(
            await call_error(resume(stub, "nested", "inner-wf", "inner")),
            "nested",
            "inner-wf.inner",
        )
    for name, log in logs.items():
        assert lines(log) == (["a", "b"] if name == "slept" else ["a"]), name  # nothing since
    async with deployed(db, 1) as stub:
        done = {name: await resume(stub, name) for name in logs}
    assert {r.status for r in done.values()} == {RUN.RUN_STATUS_SUCCESS}, done
    assert to_json(done["nested"].result)["ran"] == ["a", "inner:True", "z"]
    assert to_json(done["slept"].result)["ran"] == ["a", "b", "ask:True"]


async def test_changes_after_the_point_a_run_reached_apply_to_it(db: Path, tmp_path: Path) -> None:
    """v2 adds a step after the suspended one, and an arm to a branch the run has passed:
    the resume goes on under v2 (the new step runs; the branch's conditions are not asked
    again, so the new arm does not)."""
    async with deployed(db, 1) as stub:
        await started(stub, "appended", tmp_path / "appended.log")
        await started(stub, "armed", tmp_path / "armed.log")
    async with deployed(db, 2) as stub:
        appended = await resume(stub, "appended")
        armed = await resume(stub, "armed")
    assert appended.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(appended.result)["ran"] == ["a", "ask:True", "z"]
    assert armed.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(armed.result)["ran"] == ["yes", "ask:True"]
    assert lines(tmp_path / "armed.log") == ["yes", "ask:True"]


async def test_stored_data_that_the_new_schemas_refuse_is_refused_before_the_resume(
    db: Path, tmp_path: Path
) -> None:
    """v2's `ask` requires a `region` its stored input lacks (in `stricter`), or its stored
    suspend payload lacks (in `questioned`): the resume, and its dry run, are refused
    WORKFLOW_CHANGED naming the field, and the run stays resumable (it failed once claimed,
    for good, though the dry run had said yes). So is a time travel to it that gives no
    input (it failed the run the same way)."""
    logs = {name: tmp_path / f"{name}.log" for name in ("stricter", "questioned")}
    await started_under_v1(db, logs)
    async with deployed(db, 2) as stub:
        versions = {}
        for name, what in (("stricter", "stored input"), ("questioned", "suspend payload")):
            for dry in (True, False):
                error = await call_error(resume(stub, name, validate_only=dry))
                assert_changed(error, name, "ask", f"{what} of step [ask]", "region")
            run = await stub.GetRun(rr.GetRunRequest(run_id=name))
            assert run.status == RUN.RUN_STATUS_SUSPENDED
            versions[name] = run.result.version
        # Time travel to it on its stored input: the same refusal, pointing to input_data.
        ask = message_pb2.StepPath(segments=["ask"])
        travel = rr.TimeTravelRunRequest(run_id="stricter", step=ask)
        error = await call_error(stub.TimeTravelRun(travel, timeout=20))
        assert_changed(error, "stricter", "ask", "stored input (give input_data) of step [ask]")
        after = await stub.GetRun(rr.GetRunRequest(run_id="stricter"))
        assert after.result.version == versions["stricter"]
    async with deployed(db, 1) as stub:
        for name, log in logs.items():
            assert (await resume(stub, name)).status == RUN.RUN_STATUS_SUCCESS
            assert lines(log) == ["a", "ask:True"]


async def test_a_sleeping_run_of_a_workflow_the_new_deploy_lacks_fails_naming_it(
    db: Path, tmp_path: Path
) -> None:
    """v2 has no `napping`: the run v1 left sleeping ends FAILED when v2 starts, with the
    reason WORKFLOW_NOT_FOUND and a message naming the workflow (it said RUN_INTERRUPTED,
    which is `--recovery fail`'s)."""
    async with deployed(db, 1) as stub:
        run = await start(stub, "napping", tmp_path / "nap.log")
        assert run.status == RUN.RUN_STATUS_WAITING
    async with deployed(db, 2) as stub:
        run = await stub.GetRun(rr.GetRunRequest(run_id="napping"))
    assert run.status == RUN.RUN_STATUS_FAILED
    assert run.result.error.reason == "WORKFLOW_NOT_FOUND"
    assert "does not serve workflow 'napping'" in run.result.error.message


async def test_timeouts_that_cannot_act_after_a_deploy_leave_the_others_to_act(
    db: Path, tmp_path: Path
) -> None:
    """Deadlines pass while the server is down: 101 would resume runs whose steps v2 moved,
    one fails an unchanged run. Under v2 the first cannot act (their resumes are refused
    WORKFLOW_CHANGED), so those runs stay SUSPENDED past their deadlines; the last still
    acts, though it came due after them. (The upkeep looks at 100 due runs at a time: the
    refusal ended its round, and then the runs it could not act on took every place.)"""
    log = tmp_path / "steps.log"
    async with deployed(db, 1) as stub:
        moved = [f"moved-{i}" for i in range(101)]
        await asyncio.gather(*(start(stub, "timed-reordered", log, run_id) for run_id in moved))
        await started(stub, "timed", tmp_path / "timed.log")
    await asyncio.sleep(4.5)
    async with deployed(db, 2) as stub:

        async def failed() -> bool:
            run = await stub.GetRun(rr.GetRunRequest(run_id="timed"))
            return run.status == RUN.RUN_STATUS_FAILED

        await assert_eventually(failed, timeout=10)
        for run_id in (moved[0], moved[-1]):
            run = await stub.GetRun(rr.GetRunRequest(run_id=run_id))
            assert run.status == RUN.RUN_STATUS_SUSPENDED
    assert lines(log) == ["a"] * 101


async def test_a_step_moved_into_or_out_of_a_foreach_refuses_the_resume(
    db: Path, tmp_path: Path
) -> None:
    """v2 runs `ask` in the items of a foreach where v1 ran it once, and the other way
    round: a dry run said yes, and the resume failed the run (a foreach needs a list; the
    step got the whole list). Both are refused WORKFLOW_CHANGED, and the runs wait."""
    async with deployed(db, 1) as stub:
        await started(stub, "itemized", tmp_path / "1.log")
        await started(stub, "unitemized", tmp_path / "2.log")
    async with deployed(db, 2) as stub:
        for name, words in {
            "itemized": "waits in this run as a step of its own, but now runs in the items",
            "unitemized": "waits in this run in the items of a foreach, but is now a step",
        }.items():
            for dry in (True, False):
                assert_changed(
                    await call_error(resume(stub, name, validate_only=dry)), name, "ask", words
                )
            run = await stub.GetRun(rr.GetRunRequest(run_id=name))
            assert run.status == RUN.RUN_STATUS_SUSPENDED


async def test_time_travel_without_input_checks_a_nested_workflows_and_a_foreachs_stored_input(
    db: Path, tmp_path: Path
) -> None:
    """v2's nested workflow and the foreach's item step need a `region` that their stored
    inputs lack: a time travel to either without input is refused WORKFLOW_CHANGED (it
    turned the SUCCESS run FAILED), and the run is left as it was."""
    async with deployed(db, 1) as stub:
        run = await start(stub, "finished", tmp_path / "log")
        assert run.status == RUN.RUN_STATUS_SUCCESS, run
    async with deployed(db, 2) as stub:
        for target in ("each", "inside"):
            travel = rr.TimeTravelRunRequest(
                run_id="finished", step=message_pb2.StepPath(segments=[target])
            )
            error = await call_error(stub.TimeTravelRun(travel, timeout=20))
            assert_changed(
                error,
                "finished",
                target,
                f"stored input (give input_data) of step [{target}]",
                "region",
            )
        after = await stub.GetRun(rr.GetRunRequest(run_id="finished"))
        assert (after.status, after.result.version) == (RUN.RUN_STATUS_SUCCESS, run.version)


async def test_a_run_asleep_during_a_deploy_that_moved_its_steps_waits_for_one_that_fits(
    db: Path, tmp_path: Path
) -> None:
    """v2 adds `x` before the sleep a run of v1 is in. v2 does not continue the run (it ran
    `x`, slept again from the start, and left the old sleep WAITING: a run no deploy could
    resume); RestartRun is refused WORKFLOW_CHANGED. v1 again continues it as it was."""
    log = tmp_path / "dozing.log"
    async with deployed(db, 1) as stub:
        run = await start(stub, "dozing", log)
        assert run.status == RUN.RUN_STATUS_WAITING
    async with deployed(db, 2) as stub:
        await asyncio.sleep(3.5)  # past its wake-up time
        restart = rr.RestartRunRequest(run_id="dozing")
        error = await call_error(stub.RestartRun(restart, timeout=20))
        assert_changed(error, "dozing", "x", "[nap] has run, but [x] now comes before it")
        still = await stub.GetRun(rr.GetRunRequest(run_id="dozing"))
        assert still.status == RUN.RUN_STATUS_WAITING
    assert lines(log) == ["a"]
    async with deployed(db, 1) as stub:

        async def finished() -> bool:
            got = await stub.GetRun(rr.GetRunRequest(run_id="dozing"))
            return bool(got.status == RUN.RUN_STATUS_SUCCESS)

        await assert_eventually(finished, timeout=10)
    assert lines(log) == ["a", "z"]


async def test_changes_inside_a_nested_workflow_or_a_passed_parallel_refuse_the_resume(
    db: Path, tmp_path: Path
) -> None:
    """v2 adds `pre` before `b` in the nested workflow the run waits in, adds `p3` to a
    parallel the run has passed, and makes the waiting `ask` a nested workflow. Each resume
    is refused WORKFLOW_CHANGED naming the step, and the run stays SUSPENDED: under v2
    `pre` and `p3` would run after the resume and their outputs be lost."""
    logs = {name: tmp_path / f"{name}.log" for name in ("deepened", "widened", "nestified")}
    await started_under_v1(db, logs)
    async with deployed(db, 2) as stub:
        refusals = {
            "deepened": ("deep.pre", "[deep.b] has run", "[deep.pre] now comes before it"),
            "widened": ("p3", "[pick] has run", "[p3] now comes before it and never ran"),
            "nestified": ("ask", "step [ask] waits in this run", "nested workflow"),
        }
        for name, (step, *words) in refusals.items():
            assert_changed(await call_error(resume(stub, name)), name, step, *words)
            run = await stub.GetRun(rr.GetRunRequest(run_id=name))
            assert run.status == RUN.RUN_STATUS_SUSPENDED
    assert lines(logs["deepened"]) == ["b"]
    assert lines(logs["widened"]) == ["p1", "p2"]


async def test_a_run_taken_over_whose_running_or_sleeping_step_was_renamed_is_not_driven(
    db: Path, tmp_path: Path
) -> None:
    """A process dies while one run's `work` runs and another sleeps in `nap`; v2 renames
    both. v2 takes neither over: they keep their status (RUNNING, WAITING) past the sleep's
    end, and RestartRun of each is refused WORKFLOW_CHANGED naming the step."""
    logs = {name: tmp_path / f"{name}.log" for name in ("working", "sleeping")}
    server = ServerProcess(db, workflows=["tests.support.deploy_v1"])
    async with serving(server) as stub:  # SIGKILLed on the way out, mid-step and asleep
        for name, log in logs.items():
            await start_now(stub, name, log)

        async def at_work_and_asleep() -> bool:
            asleep = await stub.GetRun(rr.GetRunRequest(run_id="sleeping"))
            return "work" in lines(logs["working"]) and asleep.status == RUN.RUN_STATUS_WAITING

        await assert_eventually(at_work_and_asleep, timeout=10)
    async with deployed(db, 2) as stub:
        await asyncio.sleep(1.5)  # the upkeep's first rounds, past nap2's 10 ms
        for name, (status, step) in {
            "working": (RUN.RUN_STATUS_RUNNING, "work"),
            "sleeping": (RUN.RUN_STATUS_WAITING, "nap"),
        }.items():
            run = await stub.GetRun(rr.GetRunRequest(run_id=name))
            assert run.status == status, name
            restart = rr.RestartRunRequest(run_id=name)
            error = await call_error(stub.RestartRun(restart, timeout=20))
            assert_changed(error, name, step, f"step [{step}] waits in this run")
    assert lines(logs["working"]) == ["a", "work"]
    assert lines(logs["sleeping"]) == ["a"]
