"""The rest of a run's lifecycle, through a real server: durable sleep (WAITING),
CancelRun, TimeTravelRun, DeleteRun and RestartRun's preconditions.

A sleeping run is WAITING, and resumable only where a step is suspended beside the sleep;
a cancel stops it for good. A cancel of a
running step is seen by the step; a cancel of a finished run changes nothing. Time travel
re-executes from a named step (with new input, or resume data for a suspended step) and
never runs the steps before it again.
"""

from __future__ import annotations

import logging
import sys
import time
import types
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import FLOW_WORKFLOWS, serving, settings_for
from tests.support.api import assert_eventually, call_error, path, paths, struct, to_json, value
from tests.support.flows_extra import logs
from tests.support.workflows import lines
from waystation import create_step, create_workflow
from waystation.api.v1 import enums_pb2, message_pb2
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub
from waystation.engine.upkeep import Trouble
from waystation.storage import StoreUnavailable

WORKFLOWS = FLOW_WORKFLOWS
RUN = enums_pb2.RunStatus
STEP = enums_pb2.StepStatus


# -- helpers ------------------------------------------------------------------------------


async def start(
    stub: WorkflowServiceStub, workflow_id: str, data: Any, *, wait: bool = True
) -> message_pb2.WorkflowResult:
    """Start a run under a fresh id; with `wait` False, return as soon as it is accepted."""
    return await stub.StartRun(
        rr.StartRunRequest(
            workflow_id=workflow_id,
            run_id=f"{workflow_id}-{uuid.uuid4().hex[:12]}",
            input_data=value(data),
            return_immediately=not wait,
        )
    )


async def get_run(stub: WorkflowServiceStub, run_id: str) -> message_pb2.Run:
    return await stub.GetRun(rr.GetRunRequest(run_id=run_id))


async def until_status(stub: WorkflowServiceStub, run_id: str, status: int) -> message_pb2.Run:
    """Poll GetRun until the run has `status`; return it."""

    async def reached() -> bool:
        return (await get_run(stub, run_id)).status == status

    await assert_eventually(reached)
    return await get_run(stub, run_id)


async def until_logged(log: Path, expected: list[str]) -> None:
    async def logged() -> bool:
        return lines(log) == expected

    await assert_eventually(logged)


def travel(run_id: str, step: tuple[str, ...], **fields: Any) -> rr.TimeTravelRunRequest:
    for name in ("input_data", "resume_data"):
        if name in fields:
            fields[name] = value(fields[name])
    return rr.TimeTravelRunRequest(run_id=run_id, step=path(*step), **fields)


# -- sleep --------------------------------------------------------------------------------


async def test_a_sleeping_run_is_waiting_and_then_succeeds(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """During `.sleep` the run is WAITING with its sleep step WAITING; it then wakes by
    itself and finishes."""
    log = tmp_path / "sleep.log"
    started = await start(stub, "sleepy-1", {"log": str(log)}, wait=False)
    waiting = await until_status(stub, started.run_id, RUN.RUN_STATUS_WAITING)
    assert waiting.result.steps["nap"].status == STEP.STEP_STATUS_WAITING
    assert "woke" not in waiting.result.steps
    done = await until_status(stub, started.run_id, RUN.RUN_STATUS_SUCCESS)
    assert done.result.steps["nap"].status == STEP.STEP_STATUS_SUCCESS
    assert lines(log) == ["woke"]
    assert to_json(done.result.result) == {"log": str(log)}


async def test_a_start_that_waits_is_answered_when_the_run_settles_waiting(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A durable sleep settles the run WAITING (DESIGN.md: settle is success / failed /
    suspended / canceled / waiting): StartRun answers then, with the sleep's wake-up time,
    instead of holding the call for the whole sleep (days, for some). A retry with the same
    request id is answered the same way; the run wakes by itself and finishes."""
    log = tmp_path / "sleep.log"
    request = rr.StartRunRequest(
        workflow_id="sleepy-3",
        run_id=f"sleepy-{uuid.uuid4().hex[:12]}",
        input_data=value({"log": str(log)}),
        request_id="once",
    )
    waiting = await stub.StartRun(request)
    assert waiting.status == RUN.RUN_STATUS_WAITING
    assert waiting.steps["nap"].status == STEP.STEP_STATUS_WAITING
    assert waiting.steps["nap"].HasField("wake_time")
    assert lines(log) == []
    again = await stub.StartRun(request)
    assert (again.run_id, again.status) == (waiting.run_id, RUN.RUN_STATUS_WAITING)
    done = await until_status(stub, waiting.run_id, RUN.RUN_STATUS_SUCCESS)
    assert lines(log) == ["woke"]
    assert done.result.version > waiting.version


async def test_sleep_until_a_past_moment_does_not_wait_and_hands_its_input_on(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """`.sleep_until` a time already past lets the run go on at once. A sleep passes its
    input through: GetRun shows it as the sleep's recorded output, and the next step got
    it."""
    log = tmp_path / "until.log"
    done = await start(stub, "wake-past", {"log": str(log)})
    assert done.status == RUN.RUN_STATUS_SUCCESS
    assert done.steps["until"].status == STEP.STEP_STATUS_SUCCESS
    assert lines(log) == ["woke"]
    stored = await get_run(stub, done.run_id)
    assert to_json(stored.result.steps["until"].output) == {"log": str(log)}
    assert to_json(stored.result.steps["woke"].output) == {"log": str(log)}


def seconds(stamp: Any) -> float:
    return float(stamp.seconds) + stamp.nanos / 1e9


async def test_sleep_until_a_moment_ahead_waits_for_it_and_wakes_then(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`.sleep_until(t)`, t two seconds ahead: the run is WAITING with t as its wake-up
    time, and the step after the sleep runs at t, not at once."""
    wake = datetime.now(UTC) + timedelta(seconds=2)
    module = types.ModuleType(f"wake_soon_{uuid.uuid4().hex[:8]}")
    module.wake_soon = (  # type: ignore[attr-defined]
        create_workflow(id="wake-soon")
        .sleep_until(wake, id="until")
        .then(create_step(id="woke", execute=logs("woke")))
        .commit()
    )
    monkeypatch.setitem(sys.modules, module.__name__, module)
    log = tmp_path / "wake.log"
    async with (
        serving(settings_for(db_path, workflows=[module.__name__])) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = WorkflowServiceStub(channel)
        waiting = await start(stub, "wake-soon", {"log": str(log)})
        assert waiting.status == RUN.RUN_STATUS_WAITING
        assert waiting.steps["until"].status == STEP.STEP_STATUS_WAITING
        assert seconds(waiting.steps["until"].wake_time) == pytest.approx(
            wake.timestamp(), abs=1e-3
        )
        assert lines(log) == []
        done = await until_status(stub, waiting.run_id, RUN.RUN_STATUS_SUCCESS)
    assert lines(log) == ["woke"]
    assert seconds(done.result.steps["woke"].started_at) >= wake.timestamp() - 0.05
    assert time.time() >= wake.timestamp()


async def test_a_waiting_run_lists_the_step_suspended_beside_its_sleeping_branch(
    stub: WorkflowServiceStub,
) -> None:
    """One parallel branch suspends while the other sleeps: the run is WAITING, and both
    the answer and GetRun list the suspended step, its payload and its label (it can be
    resumed during the sleep). Once the nap ends the run is SUSPENDED and lists it still."""
    labels = message_pb2.OutputOptions(include_resume_labels=True)
    waiting = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="ask-beside-a-nap",
            run_id=f"nap-{uuid.uuid4().hex[:12]}",
            input_data=value({}),
            output_options=labels,
        )
    )
    stored = (
        await stub.GetRun(rr.GetRunRequest(run_id=waiting.run_id, output_options=labels))
    ).result
    for result in (waiting, stored):
        assert result.status == RUN.RUN_STATUS_WAITING
        assert paths(result) == [["asks-beside"]]
        assert to_json(result.suspend_payload["asks-beside"]) == {"asked": "asks-beside"}
        assert result.steps["asks-beside"].status == STEP.STEP_STATUS_SUSPENDED
        assert list(result.resume_labels) == ["beside-label"]
    suspended = await until_status(stub, waiting.run_id, RUN.RUN_STATUS_SUSPENDED)
    assert paths(suspended.result) == [["asks-beside"]]
    assert to_json(suspended.result.suspend_payload["asks-beside"]) == {"asked": "asks-beside"}


async def test_a_retried_call_first_answered_waiting_gets_that_answer_again(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A StartRun answered WAITING (its first step a sleep: the run is inserted asleep) and
    a ResumeRun answered WAITING (a step resumed while its sibling sleeps), each retried with
    its request id after the run has ended: each retry gets its first call's answer, WAITING
    at that call's version, not the run as it now stands (DESIGN §4)."""
    log = tmp_path / "retried.log"
    start_request = rr.StartRunRequest(
        workflow_id="sleepy-1",
        run_id=f"sleepy-{uuid.uuid4().hex[:12]}",
        request_id="start-once",
        input_data=value({"log": str(log)}),
    )
    first_start = await stub.StartRun(start_request)
    assert first_start.status == RUN.RUN_STATUS_WAITING
    await until_status(stub, first_start.run_id, RUN.RUN_STATUS_SUCCESS)
    assert await stub.StartRun(start_request) == first_start

    started = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="approve-or-remind",
            run_id=f"remind-{uuid.uuid4().hex[:12]}",
            input_data=value({"log": str(log)}),
        )
    )
    resume_request = rr.ResumeRequest(
        run_id=started.run_id, resume_data=value({"ok": True}), request_id="resume-once"
    )
    first_resume = await stub.ResumeRun(resume_request)
    assert first_resume.status == RUN.RUN_STATUS_WAITING
    await until_status(stub, started.run_id, RUN.RUN_STATUS_SUCCESS)
    assert await stub.ResumeRun(resume_request) == first_resume
    assert lines(log) == ["woke", "approve", "remind"]


async def test_resume_of_a_waiting_run_is_refused(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A sleeping run has nothing to resume: FAILED_PRECONDITION RUN_NOT_SUSPENDED, and it
    stays WAITING."""
    started = await start(stub, "sleepy-3", {"log": str(tmp_path / "w.log")}, wait=False)
    await until_status(stub, started.run_id, RUN.RUN_STATUS_WAITING)
    error = await call_error(
        stub.ResumeRun(rr.ResumeRequest(run_id=started.run_id, resume_data=value({})))
    )
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "RUN_NOT_SUSPENDED"
    assert (await get_run(stub, started.run_id)).status == RUN.RUN_STATUS_WAITING
    await stub.CancelRun(rr.CancelRunRequest(run_id=started.run_id))


async def test_cancel_of_a_waiting_run_cancels_it_and_it_never_wakes(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A canceled sleeping run is CANCELED at once, and does not wake at its wake-up time: a
    second run that starts to sleep after the cancel wakes, the canceled one does not."""
    log = tmp_path / "canceled.log"
    started = await start(stub, "sleepy-1", {"log": str(log)}, wait=False)
    await until_status(stub, started.run_id, RUN.RUN_STATUS_WAITING)
    canceled = await stub.CancelRun(rr.CancelRunRequest(run_id=started.run_id, reason="stop"))
    assert canceled.status == RUN.RUN_STATUS_CANCELED
    assert canceled.result.steps["nap"].status == STEP.STEP_STATUS_CANCELED

    later = tmp_path / "later.log"
    witness = await start(stub, "sleepy-1", {"log": str(later)}, wait=False)
    await until_status(stub, witness.run_id, RUN.RUN_STATUS_SUCCESS)
    assert lines(later) == ["woke"]
    assert lines(log) == []
    assert (await get_run(stub, started.run_id)).status == RUN.RUN_STATUS_CANCELED


# -- cancel -------------------------------------------------------------------------------


async def test_cancel_of_a_running_step_is_seen_by_the_step(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """CancelRun while a step waits: the step sees the cancellation, the step and the run
    are CANCELED, and the step never finishes."""
    log = tmp_path / "patient.log"
    started = await start(stub, "patient", {"log": str(log), "seconds": 30}, wait=False)
    await until_logged(log, ["waiting"])
    canceled = await stub.CancelRun(rr.CancelRunRequest(run_id=started.run_id, reason="enough"))
    assert canceled.status == RUN.RUN_STATUS_CANCELED
    assert lines(log) == ["waiting", "saw-cancel"]
    run = await get_run(stub, started.run_id)
    assert run.status == RUN.RUN_STATUS_CANCELED
    assert run.result.steps["wait"].status == STEP.STEP_STATUS_CANCELED
    assert run.result.error.reason == "CANCELED"
    assert "enough" in run.result.error.message


async def test_cancel_of_interruptible_records_that_it_saw_the_cancel(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """The `interruptible` step, canceled once it runs, records "saw-cancel"."""
    log = tmp_path / "interruptible.log"
    started = await start(stub, "interruptible", {"log": str(log), "seconds": 30}, wait=False)

    async def step_running() -> bool:
        run = await get_run(stub, started.run_id)
        return run.result.steps["wait"].status == STEP.STEP_STATUS_RUNNING

    await assert_eventually(step_running)
    canceled = await stub.CancelRun(rr.CancelRunRequest(run_id=started.run_id))
    assert canceled.status == RUN.RUN_STATUS_CANCELED
    await until_logged(log, ["saw-cancel"])


async def test_cancel_of_a_suspended_run_cancels_it(stub: WorkflowServiceStub) -> None:
    """A suspended run can be canceled; afterwards it cannot be resumed."""
    started = await start(stub, "two-approvals", {})
    canceled = await stub.CancelRun(rr.CancelRunRequest(run_id=started.run_id))
    assert canceled.status == RUN.RUN_STATUS_CANCELED
    error = await call_error(
        stub.ResumeRun(
            rr.ResumeRequest(run_id=started.run_id, resume_data=value({"ok": True}), step=path("a"))
        )
    )
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "RUN_NOT_SUSPENDED"


async def test_cancel_of_a_finished_run_is_a_no_op(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """CancelRun on a SUCCESS run returns it unchanged: same status, result and version."""
    done = await start(stub, "arithmetic", {"log": str(tmp_path / "a.log"), "x": 1})
    assert done.status == RUN.RUN_STATUS_SUCCESS
    canceled = await stub.CancelRun(rr.CancelRunRequest(run_id=done.run_id))
    assert canceled.status == RUN.RUN_STATUS_SUCCESS
    after = await get_run(stub, done.run_id)
    assert after.status == RUN.RUN_STATUS_SUCCESS
    assert after.result.version == done.version
    assert to_json(after.result.result) == to_json(done.result)


async def test_cancel_of_a_failed_or_canceled_run_is_a_no_op(stub: WorkflowServiceStub) -> None:
    """A FAILED run stays FAILED with its error, and a CANCELED one keeps the reason of the
    cancel that ended it: a finished run is not canceled (DESIGN.md §3)."""
    failed = await start(stub, "fails", {})
    assert failed.status == RUN.RUN_STATUS_FAILED
    again = await stub.CancelRun(rr.CancelRunRequest(run_id=failed.run_id, reason="late"))
    assert again.status == RUN.RUN_STATUS_FAILED
    assert again.result.error.reason == failed.error.reason
    assert (await get_run(stub, failed.run_id)).result.version == failed.version
    run_id = f"pending-{uuid.uuid4().hex[:12]}"
    await stub.CreateRun(rr.CreateRunRequest(workflow_id="two-approvals", run_id=run_id))
    first = await stub.CancelRun(rr.CancelRunRequest(run_id=run_id, reason="first"))
    second = await stub.CancelRun(rr.CancelRunRequest(run_id=run_id, reason="second"))
    assert second.status == RUN.RUN_STATUS_CANCELED
    assert "first" in first.result.error.message
    assert second.result.error.message == first.result.error.message
    assert second.result.version == first.result.version


async def test_cancel_of_a_pending_run_cancels_it_before_it_starts(
    stub: WorkflowServiceStub,
) -> None:
    """A created but not started run can be canceled; it cannot be started afterwards."""
    run_id = f"pending-{uuid.uuid4().hex[:12]}"
    await stub.CreateRun(rr.CreateRunRequest(workflow_id="two-approvals", run_id=run_id))
    canceled = await stub.CancelRun(rr.CancelRunRequest(run_id=run_id))
    assert canceled.status == RUN.RUN_STATUS_CANCELED
    error = await call_error(
        stub.StartRun(
            rr.StartRunRequest(workflow_id="two-approvals", run_id=run_id, input_data=value({}))
        )
    )
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert (await get_run(stub, run_id)).status == RUN.RUN_STATUS_CANCELED


# -- time travel --------------------------------------------------------------------------


async def test_time_travel_reexecutes_from_a_step_without_running_earlier_ones(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Time travel from `plus` with new input runs `plus` only: `double` and the map keep
    their results and do not run again; the result reflects the new input."""
    log = tmp_path / "travel.log"
    done = await start(stub, "arithmetic", {"log": str(log), "x": 1})
    assert to_json(done.result)["x"] == 103
    travelled = await stub.TimeTravelRun(
        travel(done.run_id, ("plus",), input_data={"log": str(log), "x": 5})
    )
    assert travelled.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(travelled.result) == {"log": str(log), "x": 6}
    assert [line.split(":")[0] for line in lines(log)] == ["double", "plus", "plus"]
    assert to_json(travelled.steps["double"].output) == to_json(done.steps["double"].output)
    assert to_json(travelled.steps["shift"].output) == to_json(done.steps["shift"].output)


async def test_time_travel_with_resume_data_continues_a_suspended_step(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Time travel to the suspended `gate` of `counted` with resume data runs `gate` with
    that data and goes on; `one` does not run again."""
    log = tmp_path / "counted.log"
    started = await start(stub, "counted", {"log": str(log)})
    assert paths(started) == [["gate"]]
    travelled = await stub.TimeTravelRun(
        travel(started.run_id, ("gate",), resume_data={"value": 41})
    )
    assert travelled.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(travelled.result) == {"value": 42}
    assert lines(log) == ["one", "gate", "two"]
    assert to_json(travelled.steps["gate"].resume_payload) == {"value": 41}


async def test_time_travel_with_resume_data_and_new_input_runs_the_step_on_the_new_input(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Time travel to the suspended `gate` with resume data and input_data: `gate` runs on
    the new input (it logs to the new log, and `two` after it), not on its stored one."""
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    started = await start(stub, "counted", {"log": str(old)})
    travelled = await stub.TimeTravelRun(
        travel(started.run_id, ("gate",), input_data={"log": str(new)}, resume_data={"value": 7})
    )
    assert travelled.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(travelled.result) == {"value": 8}
    assert lines(old) == ["one"]
    assert lines(new) == ["gate", "two"]
    assert to_json(travelled.steps["gate"].output) == {"log": str(new), "value": 7}


async def test_time_travel_to_a_step_that_never_ran_needs_input_data(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """`after-flaky` never ran (`flaky-first` failed before it): with no stored input to
    run it on, a travel to it without input_data is INVALID_ARGUMENT naming input_data,
    and the run is kept; with input_data it runs."""
    log = tmp_path / "flaky.log"
    failed = await start(stub, "fails-once", {"log": str(log)})
    assert failed.status == RUN.RUN_STATUS_FAILED
    assert "after-flaky" not in failed.steps
    error = await call_error(stub.TimeTravelRun(travel(failed.run_id, ("after-flaky",))))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert list(error.violations) == ["input_data"]
    assert "never ran" in error.violations["input_data"]
    kept = await get_run(stub, failed.run_id)
    assert (kept.status, kept.result.version) == (RUN.RUN_STATUS_FAILED, failed.version)
    assert lines(log) == ["flaky"]
    travelled = await stub.TimeTravelRun(
        travel(failed.run_id, ("after-flaky",), input_data={"log": str(log)})
    )
    assert travelled.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(travelled.result) == {"done": True}
    assert lines(log) == ["flaky", "flaky", "after"]


async def test_time_travel_with_resume_data_to_a_step_not_suspended_is_refused(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Resume data only applies to a suspended step: FAILED_PRECONDITION STEP_NOT_SUSPENDED,
    and the finished run is unchanged."""
    log = tmp_path / "counted.log"
    started = await start(stub, "counted", {"log": str(log)})
    done = await stub.ResumeRun(
        rr.ResumeRequest(run_id=started.run_id, resume_data=value({"value": 1}))
    )
    assert done.status == RUN.RUN_STATUS_SUCCESS
    error = await call_error(
        stub.TimeTravelRun(travel(done.run_id, ("gate",), resume_data={"value": 2}))
    )
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "STEP_NOT_SUSPENDED"
    after = await get_run(stub, done.run_id)
    assert after.status == RUN.RUN_STATUS_SUCCESS
    assert after.result.version == done.version


async def test_a_start_answered_at_once_shows_the_run_as_accepted(
    stub: WorkflowServiceStub,
) -> None:
    """return_immediately answers the run as it was stored, RUNNING, not a mix of a later
    status (SUSPENDED, reached meanwhile) with no steps and no suspended paths."""
    order = {"order_id": "o-1", "amount": 250}
    for _ in range(5):
        accepted = await start(stub, "order-approval", order, wait=False)
        assert accepted.status == RUN.RUN_STATUS_RUNNING
        assert not accepted.suspended and not accepted.suspend_payload
        settled = await until_status(stub, accepted.run_id, RUN.RUN_STATUS_SUSPENDED)
        assert settled.result.version > accepted.version


async def test_time_travel_past_a_suspended_step_is_refused_and_the_run_kept(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """`counted` waits at `gate`; a time travel to `two`, after it, would stop at `gate`
    again, and `two`'s new input would then override what gate's resume decided. Refused
    FAILED_PRECONDITION EARLIER_STEP_SUSPENDED with both steps named; the run is unchanged,
    and its resume goes on as before."""
    log = tmp_path / "counted.log"
    started = await start(stub, "counted", {"log": str(log)})
    error = await call_error(
        stub.TimeTravelRun(travel(started.run_id, ("two",), input_data={"value": 100}))
    )
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "EARLIER_STEP_SUSPENDED",
    )
    assert error.metadata["step_path"] == "two"
    assert error.metadata["suspended_step_path"] == "gate"
    after = await get_run(stub, started.run_id)
    assert after.status == RUN.RUN_STATUS_SUSPENDED
    assert after.result.version == started.version
    assert "two" not in after.result.steps
    done = await stub.ResumeRun(
        rr.ResumeRequest(run_id=started.run_id, resume_data=value({"value": 1}))
    )
    assert to_json(done.result) == {"value": 2}


async def test_time_travel_beside_a_suspended_parallel_sibling_runs_the_target(
    stub: WorkflowServiceStub,
) -> None:
    """A suspended step in the same parallel as the target is not in its way: the walk
    reaches both, so the travel runs (here `b` suspends again, with new input)."""
    started = await start(stub, "two-approvals", {})
    travelled = await stub.TimeTravelRun(travel(started.run_id, ("b",), input_data={}))
    assert travelled.status == RUN.RUN_STATUS_SUSPENDED
    assert paths(travelled) == [["a"], ["b"]]
    assert travelled.version > started.version


async def test_time_travel_with_invalid_resume_data_is_refused(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Resume data that does not match the step's resume schema is INVALID_ARGUMENT
    INVALID_RESUME_DATA, and the run stays suspended."""
    started = await start(stub, "counted", {"log": str(tmp_path / "c.log")})
    error = await call_error(
        stub.TimeTravelRun(travel(started.run_id, ("gate",), resume_data={"value": "many"}))
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_RESUME_DATA"
    after = await get_run(stub, started.run_id)
    assert after.status == RUN.RUN_STATUS_SUSPENDED
    assert after.result.version == started.version


async def test_time_travel_with_invalid_input_is_refused_and_the_run_kept(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """New input that the target would refuse is INVALID_ARGUMENT INVALID_INPUT, with one
    violation per problem, before anything changes (as Mastra refuses it: "Invalid
    inputData"), naming the step: the finished run keeps its result and no step runs. A
    foreach's input must be a list."""
    log = tmp_path / "counted.log"
    started = await start(stub, "counted", {"log": str(log)})
    done = await stub.ResumeRun(
        rr.ResumeRequest(run_id=started.run_id, resume_data=value({"value": 1}))
    )
    refusals = [
        (done, travel(done.run_id, ("one",), input_data={"seconds": "soon"})),
        (done, travel(done.run_id, ("gate",), input_data=[], resume_data={"value": 2})),
    ]
    items = await start(stub, "items-3", [{"name": "z"}])
    refusals.append((items, travel(items.run_id, ("item",), input_data={"name": "z"})))
    errors = [await call_error(stub.TimeTravelRun(request)) for _, request in refusals]

    assert [(e.code, e.reason) for e in errors] == [
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")
    ] * 3
    assert sorted(errors[0].violations) == ["input_data.log", "input_data.seconds"]
    assert list(errors[1].violations) == ["input_data"]
    assert list(errors[2].violations) == ["input_data"]
    # It is the target's input, not the workflow's, that was refused: the error names it.
    assert [e.metadata.get("step_path") for e in errors] == ["one", "gate", "item"]
    assert errors[0].message.startswith("invalid input for step [one] of workflow 'counted'")
    for before, _ in refusals:
        after = await get_run(stub, before.run_id)
        assert (after.status, after.result.version) == (RUN.RUN_STATUS_SUCCESS, before.version)
    assert lines(log) == ["one", "gate", "two"]


@pytest.mark.parametrize("step", [("nope",), ("plus", "deeper"), ()], ids=str)
async def test_time_travel_to_an_unknown_step_is_invalid(
    stub: WorkflowServiceStub, tmp_path: Path, step: tuple[str, ...]
) -> None:
    """A step path that names no step of the workflow is INVALID_ARGUMENT; the run is
    unchanged."""
    done = await start(stub, "arithmetic", {"log": str(tmp_path / "a.log"), "x": 1})
    error = await call_error(stub.TimeTravelRun(travel(done.run_id, step)))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_ARGUMENT"
    assert (await get_run(stub, done.run_id)).result.version == done.version


async def test_time_travel_of_an_unknown_run_is_not_found(stub: WorkflowServiceStub) -> None:
    """Time travel of a run that does not exist is NOT_FOUND."""
    error = await call_error(stub.TimeTravelRun(travel("no-such-run", ("plus",))))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "RUN_NOT_FOUND"


async def test_time_travel_to_a_step_of_a_nested_workflow_keeps_the_steps_before_it(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Time travel to `inner.b` of a finished `nested-counted` run runs `b` again (it
    suspends, as it has no resume data), then the rest; `first` and `inner.a` keep their
    results and do not run again."""
    log = tmp_path / "nested.log"
    run_id = (await start(stub, "nested-counted", {"log": str(log)})).run_id
    await stub.ResumeRun(
        rr.ResumeRequest(run_id=run_id, resume_data=value({"ok": True}), step=path("inner", "a"))
    )
    done = await stub.ResumeRun(rr.ResumeRequest(run_id=run_id, resume_data=value({"n": 1})))
    assert done.status == RUN.RUN_STATUS_SUCCESS
    assert lines(log) == ["one", "a", "b", "last"]

    travelled = await stub.TimeTravelRun(
        travel(run_id, ("inner", "b"), input_data={"log": str(log)})
    )
    assert travelled.status == RUN.RUN_STATUS_SUSPENDED
    assert paths(travelled) == [["inner", "b"]]
    assert travelled.steps["inner.a"].status == STEP.STEP_STATUS_SUCCESS
    assert "last" not in travelled.steps
    # The nested workflow runs again: its first pass's output is gone, until it ends anew.
    assert done.steps["inner"].HasField("output")
    for result in (travelled, (await get_run(stub, run_id)).result):
        assert result.steps["inner"].status == STEP.STEP_STATUS_SUSPENDED
        assert not result.steps["inner"].HasField("output")
        assert not result.steps["inner"].HasField("ended_at")
    again = await stub.ResumeRun(rr.ResumeRequest(run_id=run_id, resume_data=value({"n": 7})))
    assert again.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(again.result) == {"n": 7, "done": True}
    assert lines(log) == ["one", "a", "b", "last", "b", "last"]


async def test_time_travel_to_a_step_inside_a_foreachs_items_is_invalid(
    stub: WorkflowServiceStub,
) -> None:
    """`item-flow.check` runs once per item of the foreach `item-flow`, and a time travel
    names no item: INVALID_ARGUMENT that says to travel to the foreach, with or without
    resume data (it answered STEP_NOT_SUSPENDED and "the step never ran here", though the
    step had run, and was suspended, in every item); the run is unchanged."""
    items = [{"name": "a", "ask": True}, {"name": "b", "ask": True}]
    started = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="item-flows", run_id=f"tt-{uuid.uuid4().hex[:8]}", input_data=value(items)
        )
    )
    assert started.steps["item-flow.check"].status == STEP.STEP_STATUS_SUSPENDED
    for data in ({"resume_data": {"ok": True}}, {}):
        request = travel(started.run_id, ("item-flow", "check"), **data)
        error = await call_error(stub.TimeTravelRun(request))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "travel to [item-flow] instead" in error.violations["step"]
    assert (await get_run(stub, started.run_id)).result.version == started.version


async def test_time_travel_to_a_branch_arm_runs_the_other_chosen_arm_again(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Conditions are not asked again: travelling to arm `ba` runs it with its new input
    and runs `bw`, the other arm that was chosen, again (it was left out of the branch, and
    its output out of the result); `bb`, skipped, stays SKIPPED, also when the target lies
    inside an arm."""
    log = tmp_path / "branch.log"
    done = await start(stub, "travel-branch", {"log": str(log), "n": 1})
    assert to_json(done.result) == {"ba": 2, "bw": 3}
    travelled = await stub.TimeTravelRun(
        travel(done.run_id, ("ba",), input_data={"log": str(log), "n": 7})
    )
    assert travelled.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(travelled.result) == {"ba": 8, "bw": 3}
    assert lines(log)[4:] == ["ba", "xa", "xb", "join"]
    assert travelled.steps["bw.xb"].status == STEP.STEP_STATUS_SUCCESS
    assert travelled.steps["bb"].status == STEP.STEP_STATUS_SKIPPED
    inner = await stub.TimeTravelRun(travel(done.run_id, ("bw", "xb")))
    assert to_json(inner.result) == {"ba": 8, "bw": 3}
    assert inner.steps["bb"].status == STEP.STEP_STATUS_SKIPPED
    assert lines(log)[8:] == ["xb", "join"]


async def test_time_travel_into_a_loops_nested_body_asks_the_loop_condition_again(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """After a finished loop, travelling to `body.lb` with n = 4 gives 5, and the loop goes
    on while n < 6 (la, lb once more) before `fin`: the body's record kept the loop's end
    from the pass before, and the run went straight to `fin`."""
    log = tmp_path / "loop.log"
    done = await start(stub, "travel-loop", {"log": str(log), "n": 0})
    assert to_json(done.result)["n"] == 8
    travelled = await stub.TimeTravelRun(
        travel(done.run_id, ("body", "lb"), input_data={"log": str(log), "n": 4})
    )
    assert travelled.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(travelled.result)["n"] == 8
    assert lines(log)[8:] == ["lb", "la", "lb", "fin"]


async def test_time_travel_with_resume_data_names_a_suspended_step_not_a_workflow(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Resume data goes to a suspended step: a nested workflow around one is refused
    INVALID_ARGUMENT saying so (not "is not a step"), and a step that is not suspended is
    STEP_NOT_SUSPENDED listing the step that is (it listed none)."""
    log = tmp_path / "nested.log"
    run_id = (await start(stub, "nested-counted", {"log": str(log)})).run_id
    refused = await call_error(
        stub.TimeTravelRun(travel(run_id, ("inner",), resume_data={"ok": True}))
    )
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "[inner] is a nested workflow" in refused.violations["step"]
    assert "[inner.a]" in refused.violations["step"]
    error = await call_error(stub.TimeTravelRun(travel(run_id, ("first",), resume_data={})))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "STEP_NOT_SUSPENDED")
    assert error.suspended == [["inner", "a"]]


async def test_time_travel_past_a_step_that_failed_runs_it_again(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A step before the target that failed runs again (the run starts over from the
    target, and a failed record would end it at once): `flaky-first` failed, travelling to
    `after-flaky` runs it again, now successfully, then the target."""
    log = tmp_path / "flaky.log"
    failed = await start(stub, "fails-once", {"log": str(log)})
    assert failed.status == RUN.RUN_STATUS_FAILED
    travelled = await stub.TimeTravelRun(
        travel(failed.run_id, ("after-flaky",), input_data={"log": str(log)})
    )
    assert travelled.status == RUN.RUN_STATUS_SUCCESS
    assert lines(log) == ["flaky", "flaky", "after"]


async def test_time_travel_replaces_the_state_with_initial_state_checked_by_its_schema(
    stub: WorkflowServiceStub,
) -> None:
    """`initial_state` replaces the workflow state before the target runs again; a state
    its schema refuses is INVALID_ARGUMENT INVALID_INPUT naming the field, run unchanged."""
    done = await start(stub, "state-poked", {})
    state = message_pb2.OutputOptions(include_state=True)
    travelled = await stub.TimeTravelRun(
        travel(
            done.run_id,
            ("pokes",),
            input_data={},
            initial_state=struct({"hits": 5, "limit": 9}),
            output_options=state,
        )
    )
    assert to_json(travelled.state) == {"hits": 6, "limit": 9}
    error = await call_error(
        stub.TimeTravelRun(travel(done.run_id, ("pokes",), initial_state=struct({"hits": "x"})))
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")
    assert list(error.violations) == ["initial_state.hits"]
    assert (await get_run(stub, done.run_id)).result.version == travelled.version


async def test_time_travel_without_initial_state_keeps_the_runs_state(
    stub: WorkflowServiceStub,
) -> None:
    """Without `initial_state` the run's workflow state is kept, not reset to the schema's
    defaults: the step run again sees the hits the first run left (1) and adds one; with
    `initial_state` it sees that state instead (the proto: "Replaces the workflow state")."""
    done = await start(stub, "state-poked", {})
    state = message_pb2.OutputOptions(include_state=True)
    first = await stub.GetRun(rr.GetRunRequest(run_id=done.run_id, output_options=state))
    assert to_json(first.result.state) == {"hits": 1, "limit": 3}
    kept = await stub.TimeTravelRun(
        travel(done.run_id, ("pokes",), input_data={}, output_options=state)
    )
    assert kept.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(kept.state) == {"hits": 2, "limit": 3}
    replaced = await stub.TimeTravelRun(
        travel(
            done.run_id,
            ("pokes",),
            input_data={},
            initial_state=struct({"hits": 7}),
            output_options=state,
        )
    )
    assert to_json(replaced.state) == {"hits": 8, "limit": 3}


def poke_once(run_id: str, hits: int) -> rr.TimeTravelRunRequest:
    """Travel `state-poked` back to its step, from `hits`, with request id travel-once."""
    return travel(
        run_id,
        ("pokes",),
        input_data={},
        initial_state=struct({"hits": hits}),
        request_id="travel-once",
        output_options=message_pb2.OutputOptions(include_state=True),
    )


async def test_a_time_travel_request_id_is_scoped_to_its_run(stub: WorkflowServiceStub) -> None:
    """The same request id on two runs travels each: the second is not a replay of the
    first run's outcome."""
    runs = [await start(stub, "state-poked", {}) for _ in range(2)]
    answers = [
        await stub.TimeTravelRun(poke_once(run.run_id, hits))
        for run, hits in zip(runs, (10, 20), strict=True)
    ]
    assert [a.run_id for a in answers] == [r.run_id for r in runs]
    assert [to_json(a.state)["hits"] for a in answers] == [11, 21]


async def test_a_time_travel_request_id_replays_a_retry_and_refuses_other_arguments(
    stub: WorkflowServiceStub,
) -> None:
    """A TimeTravelRun retried with its request id gets the first outcome and runs
    nothing again; one that reuses the id with another initial state is INVALID_ARGUMENT
    on `request_id` and changes nothing."""
    run = await start(stub, "state-poked", {})

    first = await stub.TimeTravelRun(poke_once(run.run_id, 10))
    again = await stub.TimeTravelRun(poke_once(run.run_id, 10))
    error = await call_error(stub.TimeTravelRun(poke_once(run.run_id, 20)))

    assert (to_json(first.state)["hits"], again.version) == (11, first.version)
    assert (error.code, set(error.violations)) == (grpc.StatusCode.INVALID_ARGUMENT, {"request_id"})
    state = message_pb2.OutputOptions(include_state=True)
    after = await stub.GetRun(rr.GetRunRequest(run_id=run.run_id, output_options=state))
    assert (to_json(after.result.state)["hits"], after.result.version) == (11, first.version)


async def test_time_travel_of_a_running_run_is_refused(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A run that is executing cannot be re-executed from a step: FAILED_PRECONDITION
    RUN_ACTIVE, and the step goes on undisturbed."""
    log = tmp_path / "patient.log"
    started = await start(stub, "patient", {"log": str(log), "seconds": 30}, wait=False)
    await until_logged(log, ["waiting"])
    error = await call_error(
        stub.TimeTravelRun(travel(started.run_id, ("wait",), input_data={"log": str(log)}))
    )
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "RUN_ACTIVE"
    assert lines(log) == ["waiting"]
    await stub.CancelRun(rr.CancelRunRequest(run_id=started.run_id))


async def test_time_travel_to_a_foreach_with_new_items_suspends_and_resumes_them(
    stub: WorkflowServiceStub,
) -> None:
    """Time travel to a foreach step with a new list runs the items of that list: both
    asking items suspend, the first one's payload is the foreach's suspend payload, and the
    items then resume one by one as after a start."""
    done = await start(stub, "items-3", [{"name": "z"}])
    assert done.status == RUN.RUN_STATUS_SUCCESS
    items = [{"name": "q", "ask": True}, {"name": "p", "ask": True}]
    travelled = await stub.TimeTravelRun(travel(done.run_id, ("item",), input_data=items))
    assert travelled.status == RUN.RUN_STATUS_SUSPENDED
    assert paths(travelled) == [["item"]]
    assert to_json(travelled.suspend_payload["item"]) == {"item": "q"}
    assert sorted(travelled.steps["item"].items) == [0, 1]

    one = await stub.ResumeRun(
        rr.ResumeRequest(run_id=done.run_id, resume_data=value({"ok": True}), foreach_index=1)
    )
    assert one.status == RUN.RUN_STATUS_SUSPENDED
    assert to_json(one.suspend_payload["item"]) == {"item": "q"}
    assert not one.steps["item"].HasField("resume_payload")  # only the item was resumed
    last = await stub.ResumeRun(
        rr.ResumeRequest(run_id=done.run_id, resume_data=value({"ok": False}), label="item-q")
    )
    assert last.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(last.result) == [{"name": "q", "ok": False}, {"name": "p", "ok": True}]


async def test_time_travel_to_a_foreach_with_input_that_is_not_a_list_settles_the_run(
    stub: WorkflowServiceStub,
) -> None:
    """A foreach needs a list. Time travel that gives it anything else is either refused up
    front (INVALID_ARGUMENT, run unchanged) or fails the run with INVALID_STEP_INPUT, as a
    start would; it is never an INTERNAL error, and the run is never left RUNNING."""
    done = await start(stub, "items-3", [{"name": "z"}])
    try:
        result = await stub.TimeTravelRun(
            travel(done.run_id, ("item",), input_data={"name": "not-a-list"})
        )
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
        run = await get_run(stub, done.run_id)
        assert (run.status, run.result.version) == (RUN.RUN_STATUS_SUCCESS, done.version)
    else:
        assert result.status == RUN.RUN_STATUS_FAILED
        assert result.error.reason == "INVALID_STEP_INPUT"
        run = await get_run(stub, done.run_id)
        assert run.status == RUN.RUN_STATUS_FAILED
        # A settled run has no step left running: the foreach step failed.
        assert run.result.steps["item"].status == STEP.STEP_STATUS_FAILED


# -- delete -------------------------------------------------------------------------------


async def test_delete_removes_the_run(stub: WorkflowServiceStub, tmp_path: Path) -> None:
    """After DeleteRun the run is gone: GetRun is NOT_FOUND, and a second delete too."""
    done = await start(stub, "arithmetic", {"log": str(tmp_path / "a.log"), "x": 1})
    await stub.DeleteRun(rr.DeleteRunRequest(run_id=done.run_id))
    error = await call_error(get_run(stub, done.run_id))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "RUN_NOT_FOUND"
    again = await call_error(stub.DeleteRun(rr.DeleteRunRequest(run_id=done.run_id)))
    assert again.code == grpc.StatusCode.NOT_FOUND


async def test_delete_of_a_suspended_run_removes_it(stub: WorkflowServiceStub) -> None:
    """A suspended run can be deleted; a later resume of it is NOT_FOUND."""
    started = await start(stub, "two-approvals", {})
    await stub.DeleteRun(rr.DeleteRunRequest(run_id=started.run_id))
    error = await call_error(
        stub.ResumeRun(
            rr.ResumeRequest(run_id=started.run_id, resume_data=value({"ok": True}), step=path("a"))
        )
    )
    assert error.code == grpc.StatusCode.NOT_FOUND


async def test_delete_of_an_unknown_run_is_not_found(stub: WorkflowServiceStub) -> None:
    """DeleteRun of a run that never existed is NOT_FOUND RUN_NOT_FOUND."""
    error = await call_error(stub.DeleteRun(rr.DeleteRunRequest(run_id="never-was")))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "RUN_NOT_FOUND"


async def test_delete_of_a_running_run_is_refused(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A run that is executing must be canceled before it is deleted."""
    log = tmp_path / "patient.log"
    started = await start(stub, "patient", {"log": str(log), "seconds": 30}, wait=False)
    await until_logged(log, ["waiting"])
    error = await call_error(stub.DeleteRun(rr.DeleteRunRequest(run_id=started.run_id)))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert (await get_run(stub, started.run_id)).status == RUN.RUN_STATUS_RUNNING
    await stub.CancelRun(rr.CancelRunRequest(run_id=started.run_id))


# -- restart ------------------------------------------------------------------------------


async def test_restart_of_a_suspended_or_finished_run_is_refused(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """RestartRun only continues an interrupted run: a SUSPENDED or SUCCESS run gets
    FAILED_PRECONDITION RUN_NOT_ACTIVE and is unchanged."""
    suspended = await start(stub, "two-approvals", {})
    done = await start(stub, "arithmetic", {"log": str(tmp_path / "a.log"), "x": 1})
    for result in (suspended, done):
        error = await call_error(stub.RestartRun(rr.RestartRunRequest(run_id=result.run_id)))
        assert error.code == grpc.StatusCode.FAILED_PRECONDITION
        assert error.reason == "RUN_NOT_ACTIVE"
        after = await get_run(stub, result.run_id)
        assert (after.status, after.result.version) == (result.status, result.version)


async def test_restart_of_a_run_this_server_drives_is_refused(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A run that is executing here is not interrupted: RestartRun refuses it."""
    log = tmp_path / "patient.log"
    started = await start(stub, "patient", {"log": str(log), "seconds": 30}, wait=False)
    await until_logged(log, ["waiting"])
    error = await call_error(stub.RestartRun(rr.RestartRunRequest(run_id=started.run_id)))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "RUN_NOT_ACTIVE"
    assert lines(log) == ["waiting"]
    await stub.CancelRun(rr.CancelRunRequest(run_id=started.run_id))


async def test_restart_of_an_unknown_run_is_not_found(stub: WorkflowServiceStub) -> None:
    """RestartRun of a run that does not exist is NOT_FOUND."""
    error = await call_error(stub.RestartRun(rr.RestartRunRequest(run_id="never-was")))
    assert error.code == grpc.StatusCode.NOT_FOUND


def test_a_background_duty_that_keeps_failing_is_logged_once_until_it_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Suspension timeouts run four times a second and lease upkeep every few seconds: a
    database down for an hour logged a traceback each round (about 1M lines). Now: one
    warning when it starts failing, one line when it works again; a failure that is no
    database outage keeps its traceback."""
    caplog.set_level(logging.INFO, logger="waystation.engine")
    trouble = Trouble("suspension timeouts")
    for _ in range(40):
        trouble.failed(StoreUnavailable("postgresql: connection refused"))
    trouble.worked()
    trouble.worked()
    trouble.failed(RuntimeError("a bug"))
    trouble.failed(RuntimeError("a bug"))
    seen = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert seen == [
        (
            "WARNING",
            "suspension timeouts failed, retrying (said once until it works):"
            " postgresql: connection refused",
            False,
        ),
        ("INFO", "suspension timeouts works again", False),
        ("ERROR", "suspension timeouts failed, retrying (said once until it works)", True),
    ]
