"""Resume rules of DESIGN.md §4 for sequential workflows, through a real server.

Every refused resume is checked three ways: the status code and rich details (ErrorInfo
reason, domain and metadata; BadRequest violations; SuspendedStepsDetail), the run exactly
as it was (GetRun compares equal, the side-effect log did not grow), and the run still
resumable (a correct resume afterwards succeeds and every step ran exactly once).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.api import (
    assert_eventually,
    call_error,
    path,
    paths,
    rich_error,
    struct,
    to_json,
    value,
)
from tests.support.refusals import assert_error, observe, refused, resume
from tests.support.workflows import lines
from waystation.api.v1 import enums_pb2, message_pb2
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub
from waystation.engine import ResumeCommand, RunStatus
from waystation.engine.errors import ResumeConflict
from waystation.transport.server import RunningServer

DOMAIN = "waystation.dev"
SUSPENDED = enums_pb2.RUN_STATUS_SUSPENDED
SUCCESS = enums_pb2.RUN_STATUS_SUCCESS
RUNNING = enums_pb2.RUN_STATUS_RUNNING
ORDER = {"order_id": "o-1", "amount": 250.0}
APPROVAL = {"approved": True, "approver": "maria"}


# -- helpers ------------------------------------------------------------------------------


def new_run_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def start_counted(
    stub: WorkflowServiceStub, tmp_path: Path, seconds: float = 0.0, **request: Any
) -> tuple[message_pb2.WorkflowResult, Path]:
    """Start `counted` (one -> gate (suspends) -> two) with a fresh side-effect log."""
    log = tmp_path / f"{uuid.uuid4().hex}.log"
    result = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="counted",
            run_id=new_run_id("counted"),
            input_data=value({"log": str(log), "seconds": seconds}),
            **request,
        )
    )
    assert result.status == SUSPENDED
    return result, log


async def start_order(stub: WorkflowServiceStub, **request: Any) -> message_pb2.WorkflowResult:
    """Start `order-approval`, which suspends at `approval`."""
    result = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="order-approval",
            run_id=new_run_id("order"),
            input_data=value(ORDER),
            **request,
        )
    )
    assert result.status == SUSPENDED
    return result


async def assert_counted_resumable(stub: WorkflowServiceStub, run_id: str, log: Path) -> None:
    """A correct resume still works, and every step ran exactly once."""
    done = await stub.ResumeRun(resume(run_id, {"value": 7}))
    assert done.status == SUCCESS
    assert to_json(done.result) == {"value": 8}
    assert lines(log) == ["one", "gate", "two"]


def payloads(result: message_pb2.WorkflowResult) -> dict[str, Any]:
    """The suspend payloads of a result as plain JSON, keyed by path text."""
    return {key: to_json(payload) for key, payload in result.suspend_payload.items()}


async def run_count(stub: WorkflowServiceStub) -> int:
    listed = await stub.ListRuns(rr.ListRunsRequest(page_size=1000))
    return len(listed.runs)


# -- starting and resuming ----------------------------------------------------------------


async def test_start_suspends_at_the_approval_step_with_its_payload(
    stub: WorkflowServiceStub,
) -> None:
    """A run that reaches a suspending step settles SUSPENDED, lists the step as its only
    suspended path and reports the payload given to suspend()."""
    started = await start_order(stub)

    assert paths(started) == [["approval"]]
    assert payloads(started) == {
        "approval": {"order_id": "o-1", "amount": 250.0, "reason": "amount needs a manager"}
    }
    assert started.steps["validate"].status == enums_pb2.STEP_STATUS_SUCCESS
    assert started.steps["approval"].status == enums_pb2.STEP_STATUS_SUSPENDED
    assert "fulfil" not in started.steps


async def test_resume_with_valid_data_runs_to_success_with_the_result(
    stub: WorkflowServiceStub,
) -> None:
    """Resuming the suspended step with valid data runs the rest of the workflow; the result
    is the workflow output and the step keeps its normalized resume data (defaults applied)."""
    started = await start_order(stub)

    done = await stub.ResumeRun(resume(started.run_id, APPROVAL, step=path("approval")))

    assert done.status == SUCCESS
    assert to_json(done.result) == {"order_id": "o-1", "status": "fulfilled", "approver": "maria"}
    assert list(done.suspended) == []
    assert done.version > started.version
    assert to_json(done.steps["approval"].resume_payload) == {**APPROVAL, "note": ""}
    assert done.steps["fulfil"].status == enums_pb2.STEP_STATUS_SUCCESS
    run = await stub.GetRun(rr.GetRunRequest(run_id=started.run_id))
    assert run.status == SUCCESS
    assert run.result.version == done.version


async def test_each_step_runs_exactly_once_across_a_suspension(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Steps before the suspension do not run again on resume; each step runs once."""
    started, log = await start_counted(stub, tmp_path)
    assert lines(log) == ["one"]
    assert paths(started) == [["gate"]]
    assert payloads(started) == {"gate": {"waiting_for": "value"}}

    await assert_counted_resumable(stub, started.run_id, log)


async def test_omitted_step_resumes_the_only_suspended_step(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """With no step and no label, the one suspended step is resumed."""
    started, log = await start_counted(stub, tmp_path)

    done = await stub.ResumeRun(resume(started.run_id, {"value": 1}))

    assert done.status == SUCCESS
    assert to_json(done.result) == {"value": 2}
    assert lines(log) == ["one", "gate", "two"]


async def test_step_given_as_a_path_resumes_that_step(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A one-segment path names a top-level suspended step."""
    started, log = await start_counted(stub, tmp_path)

    done = await stub.ResumeRun(resume(started.run_id, {"value": 41}, step=path("gate")))

    assert done.status == SUCCESS
    assert to_json(done.result) == {"value": 42}
    assert lines(log) == ["one", "gate", "two"]


async def test_label_resumes_the_step_it_was_given_to(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A resume label given to suspend() resumes that step instead of a path."""
    started, log = await start_counted(stub, tmp_path)

    done = await stub.ResumeRun(resume(started.run_id, {"value": 5}, label="gate"))

    assert done.status == SUCCESS
    assert to_json(done.result) == {"value": 6}
    assert lines(log) == ["one", "gate", "two"]


async def test_manager_label_resumes_the_order_approval(stub: WorkflowServiceStub) -> None:
    """The example's "manager" label resumes its approval step."""
    started = await start_order(stub)

    done = await stub.ResumeRun(resume(started.run_id, APPROVAL, label="manager"))

    assert done.status == SUCCESS
    assert to_json(done.result)["approver"] == "maria"


# -- refused resumes: the run stays as it was ---------------------------------------------


async def test_unknown_label_fails_precondition_and_leaves_the_run_unchanged(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """An unknown label is LABEL_NOT_FOUND (not silently ignored); nothing changes."""
    started, log = await start_counted(stub, tmp_path)

    error = await refused(stub, resume(started.run_id, {"value": 1}, label="nope"), log)

    assert_error(
        error,
        grpc.StatusCode.FAILED_PRECONDITION,
        "LABEL_NOT_FOUND",
        run_id=started.run_id,
        label="nope",
    )
    assert error.suspended == [["gate"]]
    await assert_counted_resumable(stub, started.run_id, log)


async def test_a_label_and_a_step_path_that_disagree_are_invalid_argument(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A label with a step path naming another step is a contradiction: refused with the
    field named (Mastra lets the label win silently), nothing changes; a path that agrees
    with the label is accepted."""
    started, log = await start_counted(stub, tmp_path)

    error = await refused(
        stub, resume(started.run_id, {"value": 1}, label="gate", step=path("one")), log
    )

    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert "label 'gate' resumes [gate]" in error.violations["step"]
    done = await stub.ResumeRun(
        resume(started.run_id, {"value": 1}, label="gate", step=path("gate"))
    )
    assert done.status == SUCCESS


async def test_a_dry_run_with_a_used_request_id_answers_the_run_as_it_is_now(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """validate_only answers the run's current result; a request id it carries that an
    earlier resume used does not turn it into a replay of that resume's outcome."""
    started, _ = await start_counted(stub, tmp_path)
    first = resume(started.run_id, {"value": 1}, request_id="once")
    done = await stub.ResumeRun(first)
    assert done.status == SUCCESS

    dry = resume(started.run_id, {"value": 1}, request_id="once", validate_only=True)
    error = await call_error(stub.ResumeRun(dry))

    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RUN_NOT_SUSPENDED",
    )
    assert (await stub.ResumeRun(first)).version == done.version  # the replay itself stays


@pytest.mark.parametrize(
    "segments",
    [["one"], ["two"], ["nope"], ["gate", "deeper"], [""]],
    ids=["completed", "not-reached", "no-such-step", "below-a-leaf", "empty-segment"],
)
async def test_path_to_a_step_that_is_not_suspended_fails_precondition(
    stub: WorkflowServiceStub, tmp_path: Path, segments: list[str]
) -> None:
    """A path to a step that is not suspended, or to no step at all, is STEP_NOT_SUSPENDED
    and lists the suspended steps; nothing changes."""
    started, log = await start_counted(stub, tmp_path)

    error = await refused(stub, resume(started.run_id, {"value": 1}, step=path(*segments)), log)

    assert_error(
        error,
        grpc.StatusCode.FAILED_PRECONDITION,
        "STEP_NOT_SUSPENDED",
        run_id=started.run_id,
    )
    assert error.suspended == [["gate"]]
    assert "gate" in error.message
    await assert_counted_resumable(stub, started.run_id, log)


async def test_foreach_index_on_a_step_outside_a_foreach_fails_precondition(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """foreach_index names an item; a plain step has none, so FOREACH_INDEX_NOT_SUSPENDED,
    saying so (it said "item 0 ... is not suspended" of a step it listed as suspended)."""
    started, log = await start_counted(stub, tmp_path)

    error = await refused(stub, resume(started.run_id, {"value": 1}, foreach_index=0), log)

    assert_error(
        error,
        grpc.StatusCode.FAILED_PRECONDITION,
        "FOREACH_INDEX_NOT_SUSPENDED",
        run_id=started.run_id,
        step_path="gate",
        foreach_index="0",
    )
    assert "step [gate] of run" in error.message
    assert "is not in a foreach: it has no item 0" in error.message
    assert error.suspended == [["gate"]]
    await assert_counted_resumable(stub, started.run_id, log)


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        ({"approved": "perhaps", "approver": 5}, {"resume_data.approved", "resume_data.approver"}),
        ({"approver": "maria"}, {"resume_data.approved"}),
        ({"approved": True, "approver": ""}, {"resume_data.approver"}),
        ({}, {"resume_data.approved", "resume_data.approver"}),
        ([1, 2], {"resume_data"}),
        (None, {"resume_data"}),
    ],
    ids=["wrong-types", "missing-field", "too-short", "empty-object", "not-an-object", "omitted"],
)
async def test_invalid_resume_data_is_rejected_with_one_violation_per_problem(
    stub: WorkflowServiceStub, data: Any, fields: set[str]
) -> None:
    """Resume data is validated against the step's resume schema before anything changes:
    INVALID_RESUME_DATA with one BadRequest violation per problem; the run stays suspended
    and a correct resume afterwards succeeds."""
    started = await start_order(stub)

    error = await refused(stub, resume(started.run_id, data))

    assert_error(
        error,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_RESUME_DATA",
        run_id=started.run_id,
        step_path="approval",
    )
    assert set(error.violations) == fields
    assert all(error.violations.values())
    done = await stub.ResumeRun(resume(started.run_id, APPROVAL))
    assert done.status == SUCCESS


async def test_resume_of_an_unknown_run_is_not_found_and_leaves_nothing_behind(
    stub: WorkflowServiceStub,
) -> None:
    """An unknown run is NOT_FOUND; no run is created by the attempt (Mastra leaves a
    pending row behind)."""
    run_id = new_run_id("ghost")
    runs_before = await run_count(stub)

    error = await call_error(stub.ResumeRun(resume(run_id, APPROVAL)))

    assert_error(error, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND", run_id=run_id)
    assert await run_count(stub) == runs_before
    again = await call_error(stub.GetRun(rr.GetRunRequest(run_id=run_id)))
    assert_error(again, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND", run_id=run_id)


async def test_workflow_id_guard_mismatch_is_not_found_and_a_matching_guard_resumes(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """With workflow_id set, a run of another workflow is NOT_FOUND (and unchanged); the
    run's own workflow_id passes the guard."""
    started, log = await start_counted(stub, tmp_path)

    error = await refused(
        stub, resume(started.run_id, {"value": 1}, workflow_id="order-approval"), log
    )

    assert_error(
        error,
        grpc.StatusCode.NOT_FOUND,
        "RUN_NOT_FOUND",
        run_id=started.run_id,
        workflow_id="order-approval",
    )
    done = await stub.ResumeRun(resume(started.run_id, {"value": 1}, workflow_id="counted"))
    assert done.status == SUCCESS
    assert lines(log) == ["one", "gate", "two"]


async def test_resume_of_a_finished_run_fails_precondition(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A run that succeeded is RUN_NOT_SUSPENDED; it stays as it was and no step runs."""
    started, log = await start_counted(stub, tmp_path)
    await assert_counted_resumable(stub, started.run_id, log)
    before = await observe(stub, started.run_id, log)

    error = await call_error(stub.ResumeRun(resume(started.run_id, {"value": 2})))

    assert_error(
        error,
        grpc.StatusCode.FAILED_PRECONDITION,
        "RUN_NOT_SUSPENDED",
        run_id=started.run_id,
        status="success",
    )
    assert await observe(stub, started.run_id, log) == before


async def test_resume_of_a_canceled_run_fails_precondition(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A suspended run that was canceled can no longer be resumed: RUN_NOT_SUSPENDED."""
    started, log = await start_counted(stub, tmp_path)
    canceled = await stub.CancelRun(rr.CancelRunRequest(run_id=started.run_id, reason="no"))
    assert canceled.status == enums_pb2.RUN_STATUS_CANCELED
    before = await observe(stub, started.run_id, log)

    error = await call_error(stub.ResumeRun(resume(started.run_id, {"value": 2})))

    assert_error(
        error,
        grpc.StatusCode.FAILED_PRECONDITION,
        "RUN_NOT_SUSPENDED",
        run_id=started.run_id,
        status="canceled",
    )
    assert await observe(stub, started.run_id, log) == before
    assert lines(log) == ["one"]


async def test_resume_of_a_pending_run_fails_precondition(stub: WorkflowServiceStub) -> None:
    """A run created but never started is RUN_NOT_SUSPENDED, and stays PENDING."""
    run_id = new_run_id("pending")
    await stub.CreateRun(rr.CreateRunRequest(workflow_id="order-approval", run_id=run_id))
    before = await observe(stub, run_id)

    error = await call_error(stub.ResumeRun(resume(run_id, APPROVAL)))

    assert_error(
        error,
        grpc.StatusCode.FAILED_PRECONDITION,
        "RUN_NOT_SUSPENDED",
        run_id=run_id,
        status="pending",
    )
    assert await observe(stub, run_id) == before
    assert before[0].status == enums_pb2.RUN_STATUS_PENDING


async def test_negative_retry_count_is_invalid_argument(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """retry_count must not be negative: INVALID_ARGUMENT with a `retry_count` violation."""
    started, log = await start_counted(stub, tmp_path)

    error = await refused(stub, resume(started.run_id, {"value": 1}, retry_count=-1), log)

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert set(error.violations) == {"retry_count"}
    await assert_counted_resumable(stub, started.run_id, log)


# -- validate_only ------------------------------------------------------------------------


async def test_validate_only_with_valid_data_answers_the_current_result_and_changes_nothing(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A dry run with valid data succeeds, answers the run's current (SUSPENDED) result at
    the same version, and runs no step."""
    started, log = await start_counted(stub, tmp_path)
    before = await observe(stub, started.run_id, log)

    dry = await stub.ResumeRun(resume(started.run_id, {"value": 1}, validate_only=True))

    assert dry.status == SUSPENDED
    assert dry.version == started.version
    assert paths(dry) == [["gate"]]
    assert await observe(stub, started.run_id, log) == before
    await assert_counted_resumable(stub, started.run_id, log)


async def test_validate_only_with_invalid_data_is_rejected(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A dry run makes every check: invalid data is INVALID_RESUME_DATA."""
    started, log = await start_counted(stub, tmp_path)

    error = await refused(stub, resume(started.run_id, {"value": "x"}, validate_only=True), log)

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESUME_DATA")
    assert set(error.violations) == {"resume_data.value"}
    await assert_counted_resumable(stub, started.run_id, log)


async def test_validate_only_does_not_use_up_its_request_id(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A dry run is no change, so a real resume with the same request_id still acts."""
    started, log = await start_counted(stub, tmp_path)
    await stub.ResumeRun(
        resume(started.run_id, {"value": 1}, validate_only=True, request_id="req-1")
    )

    done = await stub.ResumeRun(resume(started.run_id, {"value": 1}, request_id="req-1"))

    assert done.status == SUCCESS
    assert lines(log) == ["one", "gate", "two"]


# -- request_id and expected_version ------------------------------------------------------


async def test_repeated_request_id_returns_the_first_outcome_without_acting_twice(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A second ResumeRun with the same request_id and arguments (a retry) answers the first
    call's outcome: same result, same version, and the steps ran once. What the caller
    waits or traces by is not an argument: a retry may carry another trace."""
    started, log = await start_counted(stub, tmp_path)
    first = await stub.ResumeRun(resume(started.run_id, {"value": 1}, request_id="req-a"))

    tracing = message_pb2.TracingOptions(tags=["retry"])
    retry = resume(started.run_id, {"value": 1}, request_id="req-a", tracing_options=tracing)
    again = await stub.ResumeRun(retry)

    assert first.status == SUCCESS
    assert again.status == SUCCESS
    assert to_json(again.result) == to_json(first.result) == {"value": 2}
    assert again.version == first.version
    assert lines(log) == ["one", "gate", "two"]


@pytest.mark.parametrize(
    "other",
    [
        {"resume_data": value({"value": 99})},
        {"request_context": struct({"tenant": "b"})},
        {"retry_count": 1},
        {"step": path("gate")},
        {"expected_version": 2},
    ],
    ids=["data", "context", "retry-count", "step-named", "expected-version"],
)
async def test_a_request_id_reused_with_other_arguments_is_invalid_argument(
    stub: WorkflowServiceStub, tmp_path: Path, other: dict[str, Any]
) -> None:
    """A request id names one call. Sent again with anything else asked, it is refused
    (INVALID_ARGUMENT on `request_id`) and nothing runs: answering the first call's outcome
    would tell the caller that a call was carried out that never was. The retry as it was
    still gets its outcome."""
    started, log = await start_counted(stub, tmp_path)
    asked: dict[str, Any] = {"resume_data": value({"value": 1}), "request_id": "req-a"}
    first = await stub.ResumeRun(rr.ResumeRequest(run_id=started.run_id, **asked))
    before = await observe(stub, started.run_id, log)

    error = await call_error(
        stub.ResumeRun(rr.ResumeRequest(run_id=started.run_id, **{**asked, **other}))
    )

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert set(error.violations) == {"request_id"}
    assert "first used for a ResumeRun with other arguments" in error.violations["request_id"]
    assert await observe(stub, started.run_id, log) == before
    again = await stub.ResumeRun(rr.ResumeRequest(run_id=started.run_id, **asked))
    assert (again.status, again.version) == (first.status, first.version)


async def test_repeated_request_id_while_the_first_call_runs_answers_its_outcome(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A retry with the same request_id that arrives while the first call's continuation is
    still running waits for it and answers its outcome (not RESUME_CONFLICT)."""
    started, log = await start_counted(stub, tmp_path, seconds=0.5)
    first = asyncio.ensure_future(
        stub.ResumeRun(resume(started.run_id, {"value": 1}, request_id="req-b"))
    )
    await wait_for_status(stub, started.run_id, RUNNING)

    again = await stub.ResumeRun(resume(started.run_id, {"value": 1}, request_id="req-b"))

    done = await first
    assert done.status == again.status == SUCCESS
    assert again.version == done.version
    assert to_json(again.result) == {"value": 2}
    assert lines(log) == ["one", "gate", "two"]


async def test_expected_version_equal_to_the_current_version_resumes(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """expected_version is a compare-and-set: the version the run reports passes."""
    started, log = await start_counted(stub, tmp_path)

    done = await stub.ResumeRun(
        resume(started.run_id, {"value": 1}, expected_version=started.version)
    )

    assert done.status == SUCCESS
    assert done.version > started.version
    assert lines(log) == ["one", "gate", "two"]


@pytest.mark.parametrize("offset", [-1, 1], ids=["older", "newer"])
async def test_expected_version_different_from_the_current_version_is_aborted(
    stub: WorkflowServiceStub, tmp_path: Path, offset: int
) -> None:
    """A different expected_version is ABORTED VERSION_MISMATCH; the run is unchanged."""
    started, log = await start_counted(stub, tmp_path)
    wrong = started.version + offset

    error = await refused(stub, resume(started.run_id, {"value": 1}, expected_version=wrong), log)

    assert_error(
        error,
        grpc.StatusCode.ABORTED,
        "VERSION_MISMATCH",
        run_id=started.run_id,
        expected_version=str(wrong),
        actual_version=str(started.version),
    )
    await assert_counted_resumable(stub, started.run_id, log)


async def test_expected_version_zero_is_compared_as_a_value(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """expected_version is `optional`: an explicit 0 is a value, not "unset"."""
    started, log = await start_counted(stub, tmp_path)
    request = resume(started.run_id, {"value": 1}, expected_version=0)
    assert request.HasField("expected_version")

    error = await refused(stub, request, log)

    assert_error(
        error,
        grpc.StatusCode.ABORTED,
        "VERSION_MISMATCH",
        expected_version="0",
        actual_version=str(started.version),
    )
    await assert_counted_resumable(stub, started.run_id, log)


# -- what the resumed step sees, and what the result carries ------------------------------


async def test_request_context_on_resume_wins_key_by_key_and_state_survives_suspension(
    stub: WorkflowServiceStub,
) -> None:
    """Request context given on resume overrides the stored keys it names and keeps the
    others; the workflow state set before suspending is there after resume; the step sees
    its resume data and its own suspend payload."""
    started = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="remember",
            run_id=new_run_id("remember"),
            request_context=struct({"tenant": "A", "other": "keep"}),
        )
    )
    assert started.status == SUSPENDED

    done = await stub.ResumeRun(
        resume(started.run_id, {"go": True}, request_context=struct({"tenant": "B"}))
    )

    assert done.status == SUCCESS
    assert to_json(done.result) == {
        "state": {"count": 1},
        "request_context": {"tenant": "B", "other": "keep"},
        "resume": {"go": True},
        "suspend_data": {"state": {"count": 1}},
    }


async def test_include_state_returns_the_workflow_state(stub: WorkflowServiceStub) -> None:
    """output_options.include_state fills WorkflowResult.state; without it, it stays empty."""
    plain = await stub.StartRun(
        rr.StartRunRequest(workflow_id="remember", run_id=new_run_id("remember"))
    )
    assert to_json(plain.state) == {}

    done = await stub.ResumeRun(
        resume(
            plain.run_id,
            {"go": True},
            output_options=message_pb2.OutputOptions(include_state=True),
        )
    )

    assert to_json(done.state) == {"count": 1}


async def test_include_resume_labels_maps_each_label_to_its_step_path(
    stub: WorkflowServiceStub,
) -> None:
    """output_options.include_resume_labels fills resume_labels (label -> step path), on
    start, on a dry-run resume and on GetRun."""
    options = message_pb2.OutputOptions(include_resume_labels=True)
    plain = await start_order(stub)
    assert dict(plain.resume_labels) == {}

    started = await start_order(stub, output_options=options)
    dry = await stub.ResumeRun(
        resume(started.run_id, APPROVAL, validate_only=True, output_options=options)
    )
    run = await stub.GetRun(rr.GetRunRequest(run_id=started.run_id, output_options=options))

    for result in (started, dry, run.result):
        assert set(result.resume_labels) == {"manager"}
        assert list(result.resume_labels["manager"].step.segments) == ["approval"]
        assert not result.resume_labels["manager"].HasField("foreach_index")


# -- concurrent resumes -------------------------------------------------------------------


async def wait_for_status(stub: WorkflowServiceStub, run_id: str, status: int) -> None:
    async def reached() -> bool:
        run = await stub.GetRun(rr.GetRunRequest(run_id=run_id))
        return bool(run.status == status)

    await assert_eventually(reached)


async def outcome(call: Any) -> message_pb2.WorkflowResult | grpc.aio.AioRpcError:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        return exc


async def test_two_concurrent_resumes_of_one_suspension_have_exactly_one_winner(
    stub: WorkflowServiceStub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Of two resumes racing for one suspension, exactly one succeeds and the other is
    ABORTED RESUME_CONFLICT; the continuation runs once, with the winner's data. The lost
    claim is the loser's answer, not an error in the server's log."""
    started, log = await start_counted(stub, tmp_path, seconds=0.3)

    results = await asyncio.gather(
        outcome(stub.ResumeRun(resume(started.run_id, {"value": 1}))),
        outcome(stub.ResumeRun(resume(started.run_id, {"value": 2}))),
    )

    wins = [r for r in results if isinstance(r, message_pb2.WorkflowResult)]
    losses = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(wins) == 1 and len(losses) == 1, results
    assert wins[0].status == SUCCESS
    loser = rich_error(losses[0])
    assert_error(loser, grpc.StatusCode.ABORTED, "RESUME_CONFLICT", run_id=started.run_id)
    assert lines(log) == ["one", "gate", "two"]
    winner_value = to_json(wins[0].steps["gate"].resume_payload)["value"]
    assert to_json(wins[0].result) == {"value": winner_value + 1}
    errors = [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not errors, errors


async def test_two_resumes_accepted_in_one_turn_race_in_their_claims(
    server: RunningServer,
    stub: WorkflowServiceStub,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two resumes that both pass every check before either claim is written (in one turn
    of the server's loop) race in the claim's compare-and-set, made in the continuation's
    task: one wins, the other gets ResumeConflict from its call, the loser's task drives
    nothing, and neither the lost claim nor its task is logged as an error."""
    started, log = await start_counted(stub, tmp_path)
    engine = server.engine

    results = await asyncio.gather(
        *(
            engine.resume_run(ResumeCommand(started.run_id, resume_data={"value": v}))
            for v in (1, 2)
        ),
        return_exceptions=True,
    )

    conflicts = [r for r in results if isinstance(r, ResumeConflict)]
    wins = [r for r in results if not isinstance(r, BaseException)]
    assert len(conflicts) == 1 and len(wins) == 1, results
    assert wins[0].status is RunStatus.SUCCESS
    assert lines(log) == ["one", "gate", "two"]
    assert started.run_id not in engine._active
    errors = [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not errors, errors


async def test_resume_while_the_winners_continuation_runs_is_a_resume_conflict(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A resume arriving while an earlier resume's continuation is still running is ABORTED
    RESUME_CONFLICT (not a wait, not RUN_NOT_SUSPENDED), and the continuation runs once."""
    started, log = await start_counted(stub, tmp_path, seconds=1.0)
    winner = asyncio.ensure_future(stub.ResumeRun(resume(started.run_id, {"value": 1})))
    await wait_for_status(stub, started.run_id, RUNNING)

    error = await call_error(stub.ResumeRun(resume(started.run_id, {"value": 2})))

    assert_error(error, grpc.StatusCode.ABORTED, "RESUME_CONFLICT", run_id=started.run_id)
    done = await winner
    assert done.status == SUCCESS
    assert to_json(done.result) == {"value": 2}
    assert lines(log) == ["one", "gate", "two"]


async def test_two_concurrent_retries_with_one_request_id_act_once(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Two calls with the same request_id racing each other never act twice: each answers
    the outcome, or is ABORTED RESUME_CONFLICT (STYLE.md rule 18: retry with the same
    request_id); a retry afterwards answers the outcome."""
    started, log = await start_counted(stub, tmp_path, seconds=0.3)
    request = resume(started.run_id, {"value": 1}, request_id="req-twin")

    results = await asyncio.gather(
        outcome(stub.ResumeRun(request)), outcome(stub.ResumeRun(request))
    )

    wins = [r for r in results if isinstance(r, message_pb2.WorkflowResult)]
    assert wins, results
    for other in results:
        if isinstance(other, grpc.aio.AioRpcError):
            assert_error(rich_error(other), grpc.StatusCode.ABORTED, "RESUME_CONFLICT")
    retry = await stub.ResumeRun(request)
    assert {(r.status, r.version) for r in [*wins, retry]} == {(SUCCESS, wins[0].version)}
    assert lines(log) == ["one", "gate", "two"]


async def test_a_resume_whose_deadline_expires_is_still_carried_out(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A resume accepted before the caller's deadline expired goes on: GetRun shows the
    run finish, a retry with the same request_id answers its outcome, and nothing ran twice."""
    started, log = await start_counted(stub, tmp_path, seconds=1.0)
    request = resume(started.run_id, {"value": 1}, request_id="req-late")

    late = await call_error(stub.ResumeRun(request, timeout=0.3))

    assert late.code == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_for_status(stub, started.run_id, SUCCESS)
    retry = await stub.ResumeRun(request)
    run = await stub.GetRun(rr.GetRunRequest(run_id=started.run_id))
    assert (retry.status, retry.version) == (SUCCESS, run.result.version)
    assert to_json(retry.result) == {"value": 2}
    assert lines(log) == ["one", "gate", "two"]
