"""Suspend and resume inside every control-flow shape (DESIGN.md §4), through a real server.

Parallel branches resume one at a time and the run stays SUSPENDED until all are done;
branch conditions are not evaluated again; a loop uses the resume data for the resumed
iteration only and asks again on the next; a nested workflow reports every inner
suspension and resumes them one by one; state and request context survive a suspension; a
step that fails on resume is retried with the same data. GetWorkflow shows each shape.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import FLOW_WORKFLOWS
from tests.support.api import assert_eventually, call_error, path, paths, struct, to_json, value
from tests.support.workflows import lines
from waystation import StepContext, create_step, create_workflow
from waystation.api.v1 import enums_pb2, message_pb2
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub
from waystation.engine import Workflow
from waystation.engine.registry import load_workflows
from waystation.engine.result import find, graph, walk

WORKFLOWS = FLOW_WORKFLOWS
RUNNING = enums_pb2.RUN_STATUS_RUNNING
SUSPENDED = enums_pb2.RUN_STATUS_SUSPENDED
WAITING = enums_pb2.RUN_STATUS_WAITING
SUCCESS = enums_pb2.RUN_STATUS_SUCCESS
STEP = enums_pb2.StepStatus
KIND = enums_pb2.StepKind
EVENT = enums_pb2.RunEventType


# -- helpers ------------------------------------------------------------------------------


async def start(
    stub: WorkflowServiceStub, workflow_id: str, data: Any = None, **fields: Any
) -> message_pb2.WorkflowResult:
    """Start a run of `workflow_id` under a fresh run id and wait until it settles."""
    return await stub.StartRun(
        rr.StartRunRequest(
            workflow_id=workflow_id,
            run_id=f"{workflow_id}-{uuid.uuid4().hex[:12]}",
            input_data=value({} if data is None else data),
            **fields,
        )
    )


def resume(run_id: str, data: Any = None, **fields: Any) -> rr.ResumeRequest:
    """A ResumeRequest; `data` None leaves resume_data unset."""
    if data is not None:
        fields["resume_data"] = value(data)
    return rr.ResumeRequest(run_id=run_id, **fields)


async def get_result(stub: WorkflowServiceStub, run_id: str) -> message_pb2.WorkflowResult:
    return (await stub.GetRun(rr.GetRunRequest(run_id=run_id))).result


def output(result: message_pb2.WorkflowResult, step: str) -> Any:
    return to_json(result.steps[step].output)


async def assert_refused_unchanged(
    stub: WorkflowServiceStub, before: message_pb2.WorkflowResult, request: rr.ResumeRequest
) -> Any:
    """The resume fails and the stored run is exactly as it was; returns the error."""
    error = await call_error(stub.ResumeRun(request))
    after = await get_result(stub, before.run_id)
    assert after.status == SUSPENDED
    assert after.version == before.version
    assert paths(after) == paths(before)
    return error


# -- parallel -----------------------------------------------------------------------------


async def test_two_parallel_suspensions_are_both_reported(stub: WorkflowServiceStub) -> None:
    """Both suspended branches of a parallel are listed, each with its own payload."""
    result = await start(stub, "two-approvals")
    assert result.status == SUSPENDED
    assert paths(result) == [["a"], ["b"]]
    assert to_json(result.suspend_payload["a"]) == {"asked": "a"}
    assert to_json(result.suspend_payload["b"]) == {"asked": "b"}
    assert result.steps["a"].status == STEP.STEP_STATUS_SUSPENDED
    assert result.steps["b"].status == STEP.STEP_STATUS_SUSPENDED
    assert "after" not in result.steps


async def start_busy(stub: WorkflowServiceStub, workflow_id: str, log: Path, seconds: float) -> str:
    """Start `workflow_id` (ask-while-busy...) without waiting; its run id once step "ask"
    has suspended while "busy" still works (the run RUNNING)."""
    run_id = f"{workflow_id}-{uuid.uuid4().hex[:12]}"
    data = value({"log": str(log), "seconds": seconds})
    started = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id=workflow_id, run_id=run_id, input_data=data, return_immediately=True
        )
    )
    assert started.status in (RUNNING, SUSPENDED)

    async def asked() -> bool:
        result = await get_result(stub, run_id)
        steps = result.steps
        return "ask" in steps and steps["ask"].status == STEP.STEP_STATUS_SUSPENDED

    await assert_eventually(asked)
    assert (await get_result(stub, run_id)).status == RUNNING
    return run_id


async def test_a_branch_that_suspended_is_resumed_once_its_busy_sibling_ends(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A resume naming a parallel branch that suspended while its sibling still works
    waits for the run to settle and then resumes it (Mastra refuses it, its issue #9430;
    here it was RUN_NOT_SUSPENDED after the 2 s grace), by path or by label."""
    for how in ({"step": path("ask")}, {"label": "ask-label"}):
        log = tmp_path / f"busy-{len(how)}-{uuid.uuid4().hex[:6]}.log"
        run_id = await start_busy(stub, "ask-while-busy", log, seconds=3)
        done = await stub.ResumeRun(resume(run_id, {"ok": True}, **how))
        assert done.status == SUCCESS
        assert lines(log) == ["busy-start", "busy-end", "ask"]  # resumed after busy ended
        assert to_json(done.result) == {
            "after": {"ask": {"step": "ask", "ok": True}, "busy": {"busy": "done"}}
        }


async def test_a_foreach_item_that_suspended_is_resumed_once_its_busy_sibling_item_ends(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """The same for the items of a foreach: item 0 suspends while item 1 works; a resume of
    item 0 by index waits for the window to end, then resumes it."""
    log = tmp_path / "items.log"
    items = [{"log": str(log), "i": 0}, {"log": str(log), "i": 1, "seconds": 3}]
    run_id = f"items-{uuid.uuid4().hex[:12]}"
    await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="items-ask-while-busy",
            run_id=run_id,
            input_data=value(items),
            return_immediately=True,
        )
    )

    async def busy() -> bool:
        return "busy-start:1" in lines(log)

    await assert_eventually(busy)
    done = await stub.ResumeRun(resume(run_id, {"ok": True}, step=path("item"), foreach_index=0))
    assert done.status == SUCCESS
    assert lines(log) == ["busy-start:1", "busy-end:1", "asked:0"]
    assert to_json(done.result) == [{"i": 0, "ok": True}, {"i": 1}]


async def test_a_refused_resume_of_a_branch_whose_sibling_works_is_answered_at_once(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Bad resume data for such a branch is refused before the run settles, and the branch
    stays suspended; a resume whose deadline passes while it waits changes nothing."""
    log = tmp_path / "busy-refused.log"
    run_id = await start_busy(stub, "ask-while-busy", log, seconds=3)
    error = await call_error(stub.ResumeRun(resume(run_id, {"ok": "maybe"}, step=path("ask"))))
    assert error.reason == "INVALID_RESUME_DATA"
    assert "busy-end" not in lines(log)
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await stub.ResumeRun(resume(run_id, {"ok": True}, step=path("ask")), timeout=0.5)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    async def settled() -> bool:
        return (await get_result(stub, run_id)).status == SUSPENDED

    await assert_eventually(settled)
    result = await get_result(stub, run_id)
    assert paths(result) == [["ask"]] and "ask" not in lines(log)
    done = await stub.ResumeRun(resume(run_id, {"ok": False}, step=path("ask")))
    assert done.status == SUCCESS
    assert to_json(done.result)["after"]["ask"] == {"step": "ask", "ok": False}


async def test_a_branch_waiting_for_its_busy_sibling_is_resumed_once_the_sibling_sleeps(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """When the busy sibling goes on to a durable sleep, the waiting resume goes on too: the
    run settled WAITING with "ask" suspended, so "ask" is resumed during the sleep and the
    resume is answered WAITING (it was RUN_NOT_SUSPENDED, as in Mastra during any sleep)."""
    log = tmp_path / "busy-asleep.log"
    run_id = await start_busy(stub, "ask-while-busy-then-asleep", log, seconds=1)
    done = await stub.ResumeRun(resume(run_id, {"ok": True}, step=path("ask")))
    assert done.status == WAITING
    assert lines(log) == ["busy-start", "busy-end", "ask"]
    assert done.steps["ask"].status == STEP.STEP_STATUS_SUCCESS
    assert done.steps["drowsy.nap"].status == STEP.STEP_STATUS_WAITING
    assert paths(done) == []
    await stub.CancelRun(rr.CancelRunRequest(run_id=run_id))


async def start_remind(stub: WorkflowServiceStub, log: Path) -> message_pb2.WorkflowResult:
    """A run of approve-or-remind, settled WAITING: "approve" suspended, the nap asleep."""
    started = await start(stub, "approve-or-remind", {"log": str(log)})
    assert started.status == WAITING
    assert paths(started) == [["approve"]]
    assert to_json(started.suspend_payload["approve"]) == {"asked": "approve"}
    assert started.steps["reminder.remind-nap"].status == STEP.STEP_STATUS_WAITING
    return started


async def test_a_branch_suspended_beside_a_sleeping_one_is_resumed_during_the_sleep(
    stub: WorkflowServiceStub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An approval beside a reminder that sleeps: the run is WAITING, lists "approve" as
    suspended, and a resume of it (by label) runs it at once, answered WAITING with the nap
    still asleep. The nap wakes at its stored time and the run ends once; the execution
    that slept before the resume stopped quietly (no warning of a run changed elsewhere)."""
    log = tmp_path / "remind.log"
    started = await start_remind(stub, log)
    wake = started.steps["reminder.remind-nap"].wake_time.ToDatetime(UTC)
    resumed = await stub.ResumeRun(resume(started.run_id, {"ok": True}, label="approve-label"))
    answered = datetime.now(UTC)
    assert answered < wake
    assert resumed.status == WAITING
    assert lines(log) == ["approve"]
    assert resumed.steps["approve"].status == STEP.STEP_STATUS_SUCCESS
    assert resumed.steps["reminder.remind-nap"].status == STEP.STEP_STATUS_WAITING
    assert resumed.steps["reminder.remind-nap"].wake_time.ToDatetime(UTC) == wake
    assert paths(resumed) == [] and "approve-label" not in resumed.resume_labels

    async def ended() -> bool:
        return (await get_result(stub, started.run_id)).status == SUCCESS

    await assert_eventually(ended, timeout=10)
    done = await get_result(stub, started.run_id)
    assert lines(log) == ["approve", "remind"]
    assert done.steps["reminder.remind"].started_at.ToDatetime(UTC) >= wake
    await asyncio.sleep(0.2)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert to_json(done.result) == {
        "after": {"approve": {"step": "approve", "ok": True}, "reminder": {"reminded": True}}
    }


async def test_a_refused_resume_during_a_sleep_leaves_the_run_waiting(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Bad resume data during the nap is refused and changes nothing; a resume that names
    no step (one is suspended) then resumes it, still during the nap. Once that resume's
    continuation sleeps, another resume is answered as the run is, RUN_NOT_SUSPENDED (as on
    any other replica), not as a conflict with a continuation that has settled."""
    log = tmp_path / "remind-refused.log"
    started = await start_remind(stub, log)
    error = await call_error(stub.ResumeRun(resume(started.run_id, {"ok": "maybe"})))
    assert error.reason == "INVALID_RESUME_DATA"
    after = await get_result(stub, started.run_id)
    assert (after.status, after.version, paths(after)) == (WAITING, started.version, [["approve"]])
    resumed = await stub.ResumeRun(resume(started.run_id, {"ok": False}))
    assert resumed.status == WAITING
    assert lines(log) == ["approve"]
    assert output(resumed, "approve") == {"step": "approve", "ok": False}
    again = await call_error(stub.ResumeRun(resume(started.run_id, {"ok": True})))
    assert again.reason == "RUN_NOT_SUSPENDED"


async def test_concurrent_resumes_during_a_sleep_continue_the_run_once(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Two resumes of the suspended step during the nap: one wins; the other is a
    RESUME_CONFLICT (or, if it reads the run only once the winner has settled WAITING,
    RUN_NOT_SUSPENDED); the step runs once, the nap wakes once, the run ends once."""
    log = tmp_path / "remind-race.log"
    started = await start_remind(stub, log)
    answers = await asyncio.gather(
        *(stub.ResumeRun(resume(started.run_id, {"ok": True}, step=path("approve"))) for _ in "ab"),
        return_exceptions=True,
    )
    won = [a for a in answers if isinstance(a, message_pb2.WorkflowResult)]
    lost = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert [w.status for w in won] == [WAITING] and len(lost) == 1
    assert lost[0].code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION)

    async def ended() -> bool:
        return (await get_result(stub, started.run_id)).status == SUCCESS

    await assert_eventually(ended, timeout=10)
    await asyncio.sleep(0.3)
    assert lines(log) == ["approve", "remind"]


async def test_a_suspension_without_a_payload_lists_an_empty_one(
    stub: WorkflowServiceStub,
) -> None:
    """`suspend()` with no payload: the result's suspend_payload holds {} for the step (as
    Mastra's `result.suspendPayload`), and the step's own record holds none."""
    result = await start(stub, "bare-suspend")
    assert result.status == SUSPENDED
    assert paths(result) == [["bare"]]
    assert result.suspend_payload["bare"].WhichOneof("kind") == "struct_value"
    assert to_json(result.suspend_payload["bare"]) == {}
    assert not result.steps["bare"].HasField("suspend_payload")
    done = await stub.ResumeRun(resume(result.run_id, {"ok": True}))
    assert done.status == SUCCESS
    assert to_json(done.result) == {"approved": True}


async def test_stepless_resume_of_two_parallel_suspensions_is_ambiguous_and_lists_both(
    stub: WorkflowServiceStub,
) -> None:
    """Without a step, a resume of two suspended branches fails listing both; the run is
    left exactly as it was."""
    started = await start(stub, "two-approvals")
    error = await assert_refused_unchanged(stub, started, resume(started.run_id, {"ok": True}))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "STEP_AMBIGUOUS"
    assert error.suspended == [["a"], ["b"]]
    assert "[a]" in error.message and "[b]" in error.message


async def test_parallel_branches_resume_one_at_a_time(stub: WorkflowServiceStub) -> None:
    """Resuming `a` leaves the run SUSPENDED at `b` only; resuming `b` by its label finishes
    the run with the parallel's output keyed by step id."""
    started = await start(stub, "two-approvals")
    first = await stub.ResumeRun(resume(started.run_id, {"ok": True}, step=path("a")))
    assert first.status == SUSPENDED
    assert paths(first) == [["b"]]
    assert list(first.suspend_payload) == ["b"]
    assert first.steps["a"].status == STEP.STEP_STATUS_SUCCESS
    assert output(first, "a") == {"step": "a", "ok": True}

    second = await stub.ResumeRun(resume(started.run_id, {"ok": False}, label="label-b"))
    assert second.status == SUCCESS
    assert paths(second) == []
    assert to_json(second.result) == {
        "after": {"a": {"step": "a", "ok": True}, "b": {"step": "b", "ok": False}}
    }


async def test_branches_resumed_at_the_same_moment_are_both_resumed_one_after_the_other(
    stub: WorkflowServiceStub,
) -> None:
    """Resumes of `a` and of `b` sent together: the one that lost the claim was refused
    RESUME_CONFLICT, "resumed by another caller", though nobody had resumed its branch,
    and a client that does not retry that left the run waiting for ever. It now waits for
    the other's continuation to settle, then resumes its own branch."""
    runs = [await start(stub, "two-approvals") for _ in range(8)]

    async def both(run_id: str) -> list[int]:
        answers = await asyncio.gather(
            stub.ResumeRun(resume(run_id, {"ok": True}, step=path("a"))),
            stub.ResumeRun(resume(run_id, {"ok": False}, label="label-b")),
        )
        return sorted(answer.status for answer in answers)

    answered = await asyncio.gather(*(both(r.run_id) for r in runs))
    for run, statuses in zip(runs, answered, strict=True):
        assert statuses == sorted([SUSPENDED, SUCCESS]), statuses
        done = await get_result(stub, run.run_id)
        assert to_json(done.result) == {
            "after": {"a": {"step": "a", "ok": True}, "b": {"step": "b", "ok": False}}
        }


async def test_a_resume_waiting_for_a_siblings_continuation_is_told_when_the_run_is_canceled(
    stub: WorkflowServiceStub,
) -> None:
    """`fast` is resumed while `slow`'s continuation works, so it waits its turn; the run
    is then canceled. The waiting resume answers FAILED_PRECONDITION RUN_NOT_SUSPENDED, as
    the run now is, not RESUME_CONFLICT "resumed by another caller": nobody resumed
    `fast`, and a client told that would think its approval had been given."""
    started = await start(stub, "slow-and-fast")
    first = asyncio.ensure_future(
        stub.ResumeRun(resume(started.run_id, {"ok": True}, step=path("slow")))
    )

    async def slow_runs() -> bool:
        return (await get_result(stub, started.run_id)).status == enums_pb2.RUN_STATUS_RUNNING

    await assert_eventually(slow_runs)
    waiting = asyncio.ensure_future(
        call_error(stub.ResumeRun(resume(started.run_id, {"ok": True}, label="fast-label")))
    )
    await asyncio.sleep(0.3)  # (the slow step works 2 s)
    assert not waiting.done()
    await stub.CancelRun(rr.CancelRunRequest(run_id=started.run_id))
    error = await waiting
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RUN_NOT_SUSPENDED")
    assert "canceled" in error.message
    assert (await first).status == enums_pb2.RUN_STATUS_CANCELED


async def test_a_step_reads_the_workflow_input_and_an_earlier_steps_output(
    stub: WorkflowServiceStub,
) -> None:
    """`ctx.get_init_data()` is the workflow's input (not the step's), and
    `ctx.get_step_result` finds an earlier step's output by the step object or by its id."""
    done = await start(stub, "context-reads", {"order": "o-1"})
    assert to_json(done.result) == {
        "init": {"order": "o-1"},
        "by_step": {"from": "first"},
        "by_id": {"from": "first"},
        "input": {"from": "first"},
    }


async def test_a_step_of_a_nested_workflow_reads_a_top_level_steps_output(
    stub: WorkflowServiceStub,
) -> None:
    """`ctx.get_step_result` inside a nested workflow finds a step of the top workflow
    (none of its own has that id), by id and by the step object."""
    done = await start(stub, "nested-context-reads")
    assert done.status == SUCCESS, done.error
    read = to_json(done.result)
    assert read["by_id"] == read["by_step"] == {"from": "first"}


async def test_a_step_raising_an_exception_without_a_message_is_named_by_its_type(
    stub: WorkflowServiceStub,
) -> None:
    """A bare `raise KeyError()` has no text: the run's error says 'KeyError', not ''."""
    failed = await start(stub, "bare-key-error")
    assert failed.status == enums_pb2.RUN_STATUS_FAILED
    assert (failed.error.reason, failed.error.message) == ("STEP_FAILED", "KeyError")
    assert failed.steps["lookup"].error.message == "KeyError"


async def test_writing_into_ctx_state_changes_no_state(
    stub: WorkflowServiceStub,
) -> None:
    """`ctx.state` is a copy: writing into it (a value its schema refuses, here) changes
    nothing stored; only set_state, which checks the schema, does."""
    done = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="state-poked",
            run_id=f"poked-{uuid.uuid4().hex[:8]}",
            input_data=value({}),
            output_options=message_pb2.OutputOptions(include_state=True),
        )
    )
    assert done.status == SUCCESS
    assert to_json(done.state) == {"hits": 1, "limit": 3}


async def test_a_failed_parallel_branch_fails_the_run_over_a_suspended_one(
    stub: WorkflowServiceStub,
) -> None:
    """When one branch fails and its sibling suspends, the failure wins: the run is FAILED
    with the failed branch named, and nothing is left to resume."""
    result = await start(stub, "ask-and-break")
    assert result.status == enums_pb2.RUN_STATUS_FAILED
    assert list(result.error.step.segments) == ["breaks"]
    assert result.steps["breaks"].status == STEP.STEP_STATUS_FAILED
    assert paths(result) == []
    error = await call_error(stub.ResumeRun(resume(result.run_id, {"ok": True}, step=path("asks"))))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "RUN_NOT_SUSPENDED"


@pytest.mark.parametrize(
    ("workflow_id", "other", "other_status"),
    [
        ("bail-and-break", "quit", STEP.STEP_STATUS_SUCCESS),
        ("break-and-abort", "stops", STEP.STEP_STATUS_CANCELED),
    ],
    ids=["over-a-bail", "over-an-abort"],
)
async def test_a_failed_parallel_branch_outranks_a_sibling_that_bails_or_aborts(
    stub: WorkflowServiceStub, workflow_id: str, other: str, other_status: int
) -> None:
    """A parallel's outcome is its most severe member's: failed over canceled (abort) over
    bailed. So a branch that raises fails the run STEP_FAILED, whether its sibling bailed
    (which alone ends the run SUCCESS) or aborted (CANCELED ABORTED alone)."""
    result = await start(stub, workflow_id)
    assert result.status == enums_pb2.RUN_STATUS_FAILED
    assert result.error.reason == "STEP_FAILED"
    assert list(result.error.step.segments) == ["broken"]
    assert result.steps["broken"].status == STEP.STEP_STATUS_FAILED
    assert result.steps[other].status == other_status
    assert not result.HasField("result")


# -- branch -------------------------------------------------------------------------------


async def test_branch_arm_that_suspends_resumes_without_evaluating_conditions_again(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """The conditions run once, at the start; the resume goes straight to the suspended arm,
    and the branch's output holds the arm that ran only."""
    log = tmp_path / "branch.log"
    started = await start(stub, "counted-branch", {"log": str(log)})
    assert started.status == SUSPENDED
    assert paths(started) == [["ask"]]
    assert lines(log) == ["cond:ask", "cond:skip"]

    done = await stub.ResumeRun(resume(started.run_id, {"ok": True}, label="ask-label"))
    assert done.status == SUCCESS
    assert lines(log) == ["cond:ask", "cond:skip", "ask"]  # the arm ran; no condition did
    assert to_json(done.result) == {"after": {"ask": {"step": "ask", "ok": True}}}


async def test_branch_arm_whose_condition_is_false_is_skipped(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """An arm whose condition does not hold is SKIPPED and never runs, before and after the
    resume of the arm that does."""
    log = tmp_path / "branch.log"
    started = await start(stub, "counted-branch", {"log": str(log)})
    assert started.steps["never"].status == STEP.STEP_STATUS_SKIPPED
    done = await stub.ResumeRun(resume(started.run_id, {"ok": True}, step=path("ask")))
    assert done.steps["never"].status == STEP.STEP_STATUS_SKIPPED
    assert lines(log) == ["cond:ask", "cond:skip", "ask"]

    small = await start(stub, "routing", {"kind": "small"})
    assert small.status == SUCCESS
    assert small.steps["big-approval"].status == STEP.STEP_STATUS_SKIPPED
    assert to_json(small.result) == {"after": {"cheap": {"cheap": True}}}


async def test_branch_with_two_suspending_arms_resumes_them_one_by_one(
    stub: WorkflowServiceStub,
) -> None:
    """Two arms that hold both suspend and are both reported; each resumes on its own."""
    started = await start(stub, "both-arms")
    assert paths(started) == [["left-arm"], ["right-arm"]]
    left = await stub.ResumeRun(resume(started.run_id, {"ok": True}, step=path("left-arm")))
    assert left.status == SUSPENDED
    assert paths(left) == [["right-arm"]]
    right = await stub.ResumeRun(resume(started.run_id, {"ok": False}))
    assert right.status == SUCCESS
    assert to_json(right.result) == {
        "after": {
            "left-arm": {"step": "left-arm", "ok": True},
            "right-arm": {"step": "right-arm", "ok": False},
        }
    }


# -- loops --------------------------------------------------------------------------------


@pytest.mark.parametrize("workflow_id", ["collect-until", "collect-while"])
async def test_loop_asks_on_every_iteration_until_its_condition_holds(
    stub: WorkflowServiceStub, workflow_id: str
) -> None:
    """Each resume feeds one iteration only: the next iteration suspends again, its payload
    showing the iteration and the running total, until the total reaches 10."""
    result = await start(stub, workflow_id)
    for iteration, (amount, total_before) in enumerate([(3, 0), (4, 3), (5, 7)]):
        assert result.status == SUSPENDED
        assert paths(result) == [["collect"]]
        assert to_json(result.suspend_payload["collect"]) == {
            "total_so_far": total_before,
            "iteration": iteration,
        }
        result = await stub.ResumeRun(resume(result.run_id, {"amount": amount}))
    assert result.status == SUCCESS
    assert to_json(result.result) == {"total": 12, "n": 3}


async def test_loop_resume_data_is_used_by_the_resumed_iteration_only(
    stub: WorkflowServiceStub,
) -> None:
    """A resume with an amount below the goal is not reused by the next iteration: that one
    suspends again and shows the resume data of the iteration before."""
    started = await start(stub, "collect-until")
    again = await stub.ResumeRun(resume(started.run_id, {"amount": 2}, step=path("collect")))
    assert again.status == SUSPENDED
    assert to_json(again.suspend_payload["collect"]) == {"total_so_far": 2, "iteration": 1}
    assert again.steps["collect"].status == STEP.STEP_STATUS_SUSPENDED
    assert to_json(again.steps["collect"].payload) == {"total": 2, "n": 1}


async def test_loop_whose_body_is_a_nested_workflow_asks_on_every_iteration(
    stub: WorkflowServiceStub,
) -> None:
    """A loop body that is a nested workflow suspends by its full path on every iteration
    and finishes once the condition holds."""
    result = await start(stub, "round-until")
    for amount, total_before in [(6, 0), (1, 6)]:
        assert result.status == SUSPENDED
        assert paths(result) == [["round", "ask-round"]]
        assert to_json(result.suspend_payload["round.ask-round"]) == {"total_so_far": total_before}
        result = await stub.ResumeRun(
            resume(result.run_id, {"amount": amount}, step=path("round", "ask-round"))
        )
    assert result.status == SUSPENDED
    done = await stub.ResumeRun(resume(result.run_id, {"amount": 5}, step=path("round")))
    assert done.status == SUCCESS
    assert to_json(done.result) == {"total": 12}


async def test_loop_condition_sees_the_output_and_the_completed_iterations(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A dountil condition gets the body's output and the number of completed iterations
    (1 after the first), once per iteration; the body gets the number completed before it
    (0 in the first: it was 0 in every iteration)."""
    log = tmp_path / "thrice.log"
    done = await start(stub, "thrice", {"log": str(log)})
    assert done.status == SUCCESS
    assert to_json(done.result) == {"log": str(log), "ticks": 3}
    assert lines(log) == ["body:0", "cond:1:1", "body:1", "cond:2:2", "body:2", "cond:3:3"]


async def test_a_nested_loop_body_sees_the_iterations_done_at_every_depth(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """When the loop's body is a nested workflow, its steps (and those of a workflow nested
    inside it) get the iterations done before theirs, as a step body does."""
    log = tmp_path / "thrice-nested.log"
    done = await start(stub, "thrice-nested", {"log": str(log)})
    assert done.status == SUCCESS
    assert to_json(done.result) == {"log": str(log), "ticks": 3}
    assert lines(log) == [
        *("body:0", "inner:0", "cond:1:1"),
        *("body:1", "inner:1", "cond:2:2"),
        *("body:2", "inner:2", "cond:3:3"),
    ]


# -- nested -------------------------------------------------------------------------------


async def test_nested_workflow_reports_both_inner_suspensions(stub: WorkflowServiceStub) -> None:
    """Both suspended leaves of a parallel inside a nested workflow are reported by their
    full paths, each with its payload."""
    result = await start(stub, "outer-pair")
    assert result.status == SUSPENDED
    assert paths(result) == [["inner-pair", "left"], ["inner-pair", "right"]]
    assert to_json(result.suspend_payload["inner-pair.left"]) == {"asked": "left"}
    assert to_json(result.suspend_payload["inner-pair.right"]) == {"asked": "right"}


async def test_resume_of_a_wrapper_with_two_inner_suspensions_is_ambiguous(
    stub: WorkflowServiceStub,
) -> None:
    """Naming only the wrapper (or nothing) is ambiguous and lists both leaves; the run is
    unchanged."""
    started = await start(stub, "outer-pair")
    both = [["inner-pair", "left"], ["inner-pair", "right"]]
    for request in (
        resume(started.run_id, {"ok": True}, step=path("inner-pair")),
        resume(started.run_id, {"ok": True}),
    ):
        error = await assert_refused_unchanged(stub, started, request)
        assert error.code == grpc.StatusCode.FAILED_PRECONDITION
        assert error.reason == "STEP_AMBIGUOUS"
        assert error.suspended == both


async def test_nested_inner_suspensions_resume_one_by_one(stub: WorkflowServiceStub) -> None:
    """Resuming the inner leaves by path one after the other finishes the nested workflow
    and then the outer one."""
    started = await start(stub, "outer-pair")
    left = await stub.ResumeRun(
        resume(started.run_id, {"ok": True}, step=path("inner-pair", "left"))
    )
    assert left.status == SUSPENDED
    assert paths(left) == [["inner-pair", "right"]]
    assert left.steps["inner-pair.left"].status == STEP.STEP_STATUS_SUCCESS
    right = await stub.ResumeRun(
        resume(started.run_id, {"ok": False}, step=path("inner-pair", "right"))
    )
    assert right.status == SUCCESS
    assert right.steps["inner-pair"].status == STEP.STEP_STATUS_SUCCESS
    assert to_json(right.result) == {
        "after": {"left": {"step": "left", "ok": True}, "right": {"step": "right", "ok": False}}
    }


async def test_suspensions_nested_in_a_parallel_inside_a_nested_workflow_are_reported(
    stub: WorkflowServiceStub,
) -> None:
    """A leaf of a workflow inside a parallel inside a nested workflow is reported by its
    full path next to its sibling; both resume by path, one after the other."""
    started = await start(stub, "deep-outer")
    assert started.status == SUSPENDED
    assert paths(started) == [["mid", "deep", "deep-ask"], ["mid", "mid-ask"]]
    assert to_json(started.suspend_payload["mid.deep.deep-ask"]) == {"asked": "deep-ask"}
    error = await assert_refused_unchanged(
        stub, started, resume(started.run_id, {"ok": True}, step=path("mid"))
    )
    assert error.reason == "STEP_AMBIGUOUS"

    deep = await stub.ResumeRun(
        resume(started.run_id, {"ok": True}, step=path("mid", "deep", "deep-ask"))
    )
    assert deep.status == SUSPENDED
    assert paths(deep) == [["mid", "mid-ask"]]
    done = await stub.ResumeRun(resume(started.run_id, {"ok": False}, step=path("mid", "mid-ask")))
    assert done.status == SUCCESS
    assert to_json(done.result) == {
        "after": {
            "deep": {"step": "deep-ask", "ok": True},
            "mid-ask": {"step": "mid-ask", "ok": False},
        }
    }


# -- state and request context ------------------------------------------------------------


async def test_state_and_request_context_survive_a_parallel_suspension(
    stub: WorkflowServiceStub,
) -> None:
    """State written by both branches before they suspend is kept; each resume sees it, adds
    to it, and sees the stored request context with the resume's keys winning."""
    include = message_pb2.OutputOptions(include_state=True)
    started = await start(
        stub,
        "state-pair",
        initial_state=struct({"seed": 1}),
        request_context=struct({"tenant": "A", "keep": "yes"}),
        output_options=include,
    )
    assert started.status == SUSPENDED
    assert to_json(started.state) == {"seed": 1, "keep-a": 1, "keep-b": 1}

    first = await stub.ResumeRun(
        resume(
            started.run_id,
            {"note": "x"},
            step=path("keep-a"),
            request_context=struct({"tenant": "B"}),
            output_options=include,
        )
    )
    assert first.status == SUSPENDED
    assert to_json(first.state) == {"seed": 1, "keep-a": 1, "keep-b": 1, "keep-a-resumed": "x"}
    assert output(first, "keep-a") == {
        "state": {"seed": 1, "keep-a": 1, "keep-b": 1, "keep-a-resumed": "x"},
        "request_context": {"tenant": "B", "keep": "yes"},
    }

    second = await stub.ResumeRun(
        resume(started.run_id, {"note": "y"}, step=path("keep-b"), output_options=include)
    )
    assert second.status == SUCCESS
    final_state = {
        "seed": 1,
        "keep-a": 1,
        "keep-b": 1,
        "keep-a-resumed": "x",
        "keep-b-resumed": "y",
    }
    assert to_json(second.state) == final_state
    assert output(second, "keep-b") == {
        "state": final_state,
        "request_context": {"tenant": "B", "keep": "yes"},
    }


async def test_a_step_putting_unstorable_state_fails_and_the_run_settles(
    stub: WorkflowServiceStub,
) -> None:
    """State is stored as JSON: a step that sets a value JSON cannot hold fails like any
    step error (as NaN does), and the run settles FAILED instead of being left RUNNING."""
    result = await start(stub, "unstorable-state")
    assert result.status == enums_pb2.RUN_STATUS_FAILED
    assert list(result.error.step.segments) == ["unstorable"]
    assert result.steps["unstorable"].status == STEP.STEP_STATUS_FAILED
    run = await stub.GetRun(rr.GetRunRequest(run_id=result.run_id))
    assert run.status == enums_pb2.RUN_STATUS_FAILED


async def test_a_label_two_suspensions_share_names_each_in_turn(stub: WorkflowServiceStub) -> None:
    """Two parallel steps suspend with one label: it names the one that suspended last (as
    in Mastra); once that one is resumed, it names the other, which the next resume by the
    label reaches. The label went away with the first resume, and the second step could no
    longer be resumed by it (LABEL_NOT_FOUND)."""
    labels = message_pb2.OutputOptions(include_resume_labels=True)
    started = await stub.StartRun(
        rr.StartRunRequest(workflow_id="same-label", output_options=labels)
    )
    assert started.status == enums_pb2.RUN_STATUS_SUSPENDED
    first = list(started.resume_labels["same"].step.segments)
    assert first in (["one"], ["two"])
    again = await stub.ResumeRun(
        resume(started.run_id, {"ok": True}, label="same", output_options=labels)
    )
    assert again.status == enums_pb2.RUN_STATUS_SUSPENDED
    other = [s for s in (["one"], ["two"]) if s != first]
    assert [list(p.segments) for p in again.suspended] == other
    assert [list(again.resume_labels["same"].step.segments)] == other
    done = await stub.ResumeRun(
        resume(started.run_id, {"ok": False}, label="same", output_options=labels)
    )
    assert done.status == enums_pb2.RUN_STATUS_SUCCESS
    assert dict(done.resume_labels) == {}


async def test_a_suspension_with_an_empty_resume_label_fails_the_step(
    stub: WorkflowServiceStub,
) -> None:
    """A resume label is 1-200 characters: `suspend(..., resume_label="")` raises in the
    step, which fails STEP_FAILED saying so; nothing is left suspended or labelled."""
    labels = message_pb2.OutputOptions(include_resume_labels=True)
    failed = await start(stub, "empty-label", output_options=labels)
    assert failed.status == enums_pb2.RUN_STATUS_FAILED
    assert failed.error.reason == "STEP_FAILED"
    assert "a resume label is a string of 1-200 characters" in failed.error.message
    assert failed.steps["unlabeled"].status == STEP.STEP_STATUS_FAILED
    assert paths(failed) == [] and dict(failed.resume_labels) == {}


async def test_a_state_update_its_schema_refuses_fails_the_step_field_by_field(
    stub: WorkflowServiceStub,
) -> None:
    """set_state with data the state schema refuses fails the attempt with INVALID_STATE,
    one violation per field, as an output that breaks its schema does (it was STEP_FAILED
    with pydantic's text); the step may catch the refusal (a ValueError) and go on."""
    bad = {"update": {"hits": "many", "limit": [1]}}
    failed = await start(stub, "state-checked", bad)
    assert failed.status == enums_pb2.RUN_STATUS_FAILED
    assert failed.error.reason == "INVALID_STATE"
    assert failed.error.message == "state of step [sets] is invalid"
    assert sorted(v["field"] for v in to_json(failed.error.details)["violations"]) == [
        "hits",
        "limit",
    ]
    kept = await start(stub, "state-checked", {**bad, "swallow": True})
    assert kept.status == SUCCESS
    assert to_json(kept.result) == {"kept": {"hits": 0, "limit": 10}}


async def test_a_state_update_the_steps_own_state_schema_refuses_fails_the_step(
    stub: WorkflowServiceStub,
) -> None:
    """A step's own `state_schema` checks set_state as the workflow's does: the workflow
    has none, the step's refuses the update, and the step fails INVALID_STATE with the
    field named."""
    failed = await start(stub, "step-state-checked", {"update": {"hits": "many"}})
    assert failed.status == enums_pb2.RUN_STATUS_FAILED
    assert failed.error.reason == "INVALID_STATE"
    assert failed.error.message == "state of step [sets-own] is invalid"
    assert [v["field"] for v in to_json(failed.error.details)["violations"]] == ["hits"]
    fine = await start(stub, "step-state-checked", {"update": {"hits": 2}})
    assert fine.status == SUCCESS
    assert to_json(fine.result) == {"state": {"hits": 2}}


async def test_an_output_the_workflows_output_schema_refuses_fails_the_run(
    stub: WorkflowServiceStub,
) -> None:
    """The workflow's `output_schema` is checked once its last step has finished: the step
    succeeded, the run is FAILED INVALID_WORKFLOW_OUTPUT with the field named."""
    done = await start(stub, "output-refused", "hello")
    assert done.status == enums_pb2.RUN_STATUS_FAILED
    assert done.error.reason == "INVALID_WORKFLOW_OUTPUT"
    assert done.error.message == "workflow 'output-refused' output is invalid"
    assert [v["field"] for v in to_json(done.error.details)["violations"]] == ["greeting"]
    assert done.steps["says"].status == STEP.STEP_STATUS_SUCCESS
    assert not done.HasField("result")


async def test_input_a_nested_workflows_input_schema_refuses_fails_it_before_its_steps_run(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A nested workflow is a step: input that breaks its `input_schema` fails it at once,
    INVALID_STEP_INPUT with the field named, and none of its steps runs (its own step has
    no schema that would refuse it)."""
    log = tmp_path / "nested.log"
    done = await start(stub, "nested-input-checked", {"log": str(log), "n": "many"})
    assert done.status == enums_pb2.RUN_STATUS_FAILED
    assert done.error.reason == "INVALID_STEP_INPUT"
    assert list(done.error.step.segments) == ["wants-numbers"]
    assert done.error.message == "input of nested workflow [wants-numbers] is invalid"
    assert [v["field"] for v in to_json(done.error.details)["violations"]] == ["n"]
    assert done.steps["wants-numbers"].status == STEP.STEP_STATUS_FAILED
    assert "wants-numbers.takes" not in done.steps
    assert lines(log) == []


# -- retries on resume --------------------------------------------------------------------


async def test_step_failing_on_resume_is_retried_with_the_same_data(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """The resumed step fails once, and its retry gets the same resume data and succeeds;
    `retry_count` is visible to the step and on the step result."""
    log = tmp_path / "flaky.log"
    started = await start(stub, "flaky", {"log": str(log)})
    assert started.status == SUSPENDED
    assert lines(log) == []
    done = await stub.ResumeRun(resume(started.run_id, {"ok": True}))
    assert done.status == SUCCESS
    assert lines(log) == ["attempt:0:True", "attempt:1:True"]
    assert to_json(done.result) == {"ok": True, "retry_count": 1}
    assert done.steps["flaky"].attempt == 1
    assert to_json(done.steps["flaky"].resume_payload) == {"ok": True}


async def test_a_step_that_fails_after_its_resume_is_no_longer_shown_suspended(
    stub: WorkflowServiceStub,
) -> None:
    """A resumed step that fails keeps its resume data but not its suspension: no suspend
    payload, suspended_at or label, as a resumed step that succeeds (and as Mastra drops
    `suspendPayload` on resume); the proto gives them only "while suspended"."""
    started = await start(stub, "resume-fails", {})
    assert started.status == SUSPENDED
    assert started.steps["refuses"].HasField("suspend_payload")
    done = await stub.ResumeRun(resume(started.run_id, {"ok": True}))
    assert done.status == enums_pb2.RUN_STATUS_FAILED
    for result in (done, await get_result(stub, started.run_id)):
        step = result.steps["refuses"]
        assert step.status == enums_pb2.STEP_STATUS_FAILED
        assert not step.HasField("suspend_payload")
        assert not step.HasField("suspended_at")
        assert step.HasField("resumed_at") and step.HasField("ended_at")
        assert to_json(step.resume_payload) == {"ok": True}
        assert dict(result.resume_labels) == {}


async def test_a_suspended_step_that_ends_unresumed_is_no_longer_shown_suspended(
    stub: WorkflowServiceStub,
) -> None:
    """A suspended step that a sibling's failure, or a CancelRun, ends CANCELED keeps no
    suspend payload or time, as one that ends after its resume keeps none: the proto gives
    them "while suspended" (it kept them)."""
    failed = await start(stub, "parallel-fail", {})
    assert failed.status == enums_pb2.RUN_STATUS_FAILED
    asked = await start(stub, "two-stages", {})
    canceled = await stub.CancelRun(rr.CancelRunRequest(run_id=asked.run_id))
    for result, key in ((failed, "waiting"), (canceled.result, "first")):
        step = result.steps[key]
        assert step.status == STEP.STEP_STATUS_CANCELED, key
        assert not step.HasField("suspend_payload"), key
        assert not step.HasField("suspended_at"), key
        assert step.HasField("ended_at"), key


async def test_resume_with_a_retry_count_starts_the_step_at_that_attempt(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """`retry_count` on the resume is the attempt the resumed step starts from, as the step
    sees it in `ctx.retry_count`."""
    log = tmp_path / "flaky.log"
    started = await start(stub, "flaky", {"log": str(log)})
    done = await stub.ResumeRun(resume(started.run_id, {"ok": True}, retry_count=1))
    assert done.status == SUCCESS
    assert lines(log) == ["attempt:1:True"]
    assert to_json(done.result) == {"ok": True, "retry_count": 1}


async def test_the_workflow_retry_config_retries_a_failing_step(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """`retry_config={"attempts": 2, ...}` on the workflow (a mapping, as in Mastra, or a
    RetryConfig) gives a step without its own `retries` two more tries."""
    log = tmp_path / "retries.log"
    done = await start(stub, "workflow-retries", {"log": str(log)})
    assert done.status == SUCCESS, done.error
    assert lines(log) == ["attempt:0", "attempt:1", "attempt:2"]
    assert to_json(done.result) == {"retry_count": 2}


async def retried_twice(
    stub: WorkflowServiceStub, workflow_id: str, log: Path
) -> tuple[message_pb2.WorkflowResult, float]:
    """Run `workflow_id`, whose step fails twice and then succeeds; check that it did, and
    return the result with the seconds the run took."""
    began = time.monotonic()
    done = await start(stub, workflow_id, {"log": str(log)})
    took = time.monotonic() - began
    assert done.status == SUCCESS, done.error
    assert lines(log) == ["attempt:0", "attempt:1", "attempt:2"]
    return done, took


async def test_the_workflow_retry_config_waits_its_delay_before_each_retry(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """`retry_config={"attempts": 2, "delay": 0.5}`: a step that fails twice succeeds on its
    third attempt, the run taking at least the two delays (about 1 s)."""
    _, took = await retried_twice(stub, "spaced-retries", tmp_path / "retries.log")
    assert took >= 0.9, took


async def test_a_nested_workflow_without_a_retry_config_takes_the_top_workflows(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A step of a nested workflow that has no retry_config is retried by the top
    workflow's: its attempts (two more tries: the step succeeds on its third) and its delay
    (0.3 s before each retry)."""
    done, took = await retried_twice(stub, "inherited-retries", tmp_path / "retries.log")
    assert done.steps["no-retry-config.twice-failing"].attempt == 2
    assert to_json(done.result) == {"retry_count": 2}
    assert took >= 0.5, took


async def test_output_that_breaks_the_output_schema_fails_the_attempt_with_its_fields(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """An output that does not match the step's `output_schema` fails the attempt like a
    raise (it is retried), and the run's error says so: INVALID_STEP_OUTPUT with one
    violation per field, not the validator's text; a suspend payload likewise."""
    log = tmp_path / "output.log"
    done = await start(stub, "wrong-output", {"log": str(log)})
    assert done.status == enums_pb2.RUN_STATUS_FAILED
    assert lines(log) == ["attempt:0", "attempt:1"]
    error = done.error
    assert (error.reason, list(error.step.segments)) == ("INVALID_STEP_OUTPUT", ["greet"])
    assert error.message == "output of step [greet] is invalid"
    assert [v["field"] for v in to_json(error.details)["violations"]] == ["greeting"]
    assert done.steps["greet"].error.reason == "INVALID_STEP_OUTPUT"

    asked = await start(stub, "wrong-payload")
    assert asked.status == enums_pb2.RUN_STATUS_FAILED
    assert asked.error.reason == "INVALID_SUSPEND_PAYLOAD"
    assert [v["field"] for v in to_json(asked.error.details)["violations"]] == ["greeting"]


@pytest.mark.parametrize(
    ("retry_config", "error"),
    [
        ({"attempts": 2, "delay_ms": 5}, TypeError),
        ({"attempts": "2"}, TypeError),
        ({"attempts": -1}, ValueError),
        ({"delay": -0.5}, ValueError),
        ({"delay": float("nan")}, ValueError),
        ([2, 0], TypeError),
    ],
    ids=["unknown-field", "attempts-not-int", "negative-attempts", "negative-delay", "nan", "list"],
)
def test_a_retry_config_that_cannot_work_is_refused_when_the_workflow_is_defined(
    retry_config: Any, error: type[Exception]
) -> None:
    """Not at the first run, as an INTERNAL failure of every run."""
    with pytest.raises(error, match="retry_config"):
        create_workflow(id="bad-retries", retry_config=retry_config)
    with pytest.raises(ValueError, match="retries"):
        create_step(id="s", retries=-1, execute=_noop)


async def _noop(ctx: StepContext) -> None:
    return None


def _step(step_id: str, **schemas: Any) -> Any:
    return create_step(id=step_id, execute=_noop, **schemas)


def _flow() -> Workflow:
    return create_workflow(id="bad-shape")


_LAST_HOUR_IN_NEW_YORK = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))
"""Past the last second a protobuf Timestamp holds, in UTC: every answer that showed its
wake-up time failed INTERNAL."""


@pytest.mark.parametrize(
    ("define", "error", "words"),
    [
        (lambda: _step("s", input_schema=int), TypeError, "input_schema must be a pydantic"),
        (lambda: _step("s", resume_schema=dict), TypeError, "resume_schema must be a pydantic"),
        (lambda: create_workflow(id="w", input_schema=str), TypeError, "input_schema"),
        (lambda: _flow().parallel([_step("a"), _step("a")]), ValueError, "two steps"),
        (
            lambda: _flow().branch([(lambda c: True, _step("a")), (lambda c: True, _step("a"))]),
            ValueError,
            "two steps",
        ),
        (lambda: _flow().parallel([]), TypeError, "non-empty list"),
        (lambda: _flow().branch([]), TypeError, "non-empty list"),
        (lambda: _flow().branch([(True, _step("a"))]), TypeError, "condition is a function"),
        (lambda: _flow().branch([_step("a")]), TypeError, "(condition, step) pair"),
        (lambda: _flow().dountil(_step("a"), None), TypeError, "condition is a function"),
        (lambda: _flow().then("a"), TypeError, "takes a step or a committed workflow"),
        (lambda: _flow().foreach(_step("a"), concurrency=1.5), TypeError, "concurrency"),
        (lambda: _flow().map(5), TypeError, "function of ctx"),
        (lambda: _flow().sleep(-5), ValueError, "seconds from 0 to a century"),
        (lambda: _flow().sleep(float("nan")), ValueError, "seconds from 0 to a century"),
        (lambda: _flow().sleep(1e300), ValueError, "seconds from 0 to a century"),
        (lambda: _flow().sleep("5"), TypeError, "number of seconds"),
        (lambda: _flow().sleep_until("2030-01-01"), TypeError, "datetime"),
        (lambda: _flow().sleep_until(_LAST_HOUR_IN_NEW_YORK), ValueError, "9999-12-31T23:59:59Z"),
        (lambda: _flow().sleep_until(datetime(2030, 1, 1)), ValueError, "timezone-aware"),
        (
            lambda: _flow().then(_step("a")).then(_step("a")),
            ValueError,
            "workflow 'bad-shape' already has a step with id 'a'",
        ),
        (lambda: _step("a#1"), ValueError, "step id 'a#1' may not contain '#'"),
        (lambda: _step("a.b"), ValueError, "step id 'a.b' may not contain '.'"),
        (lambda: _step("s" * 201), ValueError, "is longer than 200 characters"),
        (lambda: create_workflow(id="w" * 201), ValueError, "is longer than 200 characters"),
        (lambda: _flow().commit(), ValueError, "workflow 'bad-shape' has no steps"),
        (
            lambda: _flow().then(_step("a")).commit().then(_step("b")),
            ValueError,
            "workflow 'bad-shape' is committed",
        ),
        (
            lambda: _flow().then(create_workflow(id="inner").then(_step("a"))),
            ValueError,
            "nested workflow 'inner' must be committed",
        ),
        (
            lambda: create_step(id="s", execute=lambda ctx: None),
            TypeError,
            "step 's': execute must be an async function",
        ),
    ],
    ids=[
        "step-schema-int",
        "resume-schema-dict",
        "workflow-schema-str",
        "parallel-twice-one-id",
        "branch-twice-one-id",
        "empty-parallel",
        "empty-branch",
        "branch-condition-not-callable",
        "branch-arm-not-a-pair",
        "loop-condition-none",
        "then-a-string",
        "foreach-concurrency-float",
        "map-not-callable",
        "negative-sleep",
        "nan-sleep",
        "century-sleep",
        "sleep-text",
        "sleep-until-text",
        "sleep-until-past-timestamps",
        "sleep-until-naive",
        "then-twice-one-id",
        "step-id-with-hash",
        "step-id-with-dot",
        "step-id-too-long",
        "workflow-id-too-long",
        "commit-empty",
        "then-after-commit",
        "nested-uncommitted",
        "sync-execute",
    ],
)
def test_a_definition_that_cannot_work_is_refused_when_it_is_made(
    define: Any, error: type[Exception], words: str
) -> None:
    """When the module loads, with a message naming the problem; not at run time as an
    INTERNAL failure, a lost step or a sleep that does not sleep."""
    with pytest.raises(error) as caught:
        define()
    assert words in str(caught.value)


@pytest.mark.parametrize(
    "define",
    [
        lambda: _flow().sleep(-1),
        lambda: _flow().sleep_until("2030-01-01"),
        lambda: _flow().foreach(_step("a"), concurrency=0),
        lambda: create_workflow(id="bad-shape", retry_config={"attempts": 2, "delai": 1}),
    ],
    ids=["sleep", "sleep-until", "foreach-concurrency", "retry-config"],
)
def test_a_refused_definition_names_its_workflow(define: Any) -> None:
    """A module may define many workflows: the message says which one is wrong."""
    with pytest.raises((TypeError, ValueError)) as caught:
        define()
    assert "workflow 'bad-shape'" in str(caught.value)


# -- map ----------------------------------------------------------------------------------


async def test_map_reshapes_the_previous_output(stub: WorkflowServiceStub, tmp_path: Path) -> None:
    """`.map` turns `double`'s output into the next step's input, and keeps its own result."""
    log = str(tmp_path / "map.log")
    done = await start(stub, "arithmetic", {"log": log, "x": 1})
    assert done.status == SUCCESS
    assert output(done, "double") == {"log": log, "x": 2}
    assert output(done, "shift") == {"log": log, "x": 102}
    assert to_json(done.result) == {"log": log, "x": 103}
    # Numbers cross the API as google.protobuf.Value doubles: compare them as numbers.
    assert [(name, float(x)) for name, x in (line.split(":") for line in lines(log))] == [
        ("double", 1),
        ("plus", 102),
    ]


# -- the step graph -----------------------------------------------------------------------


async def first_node(stub: WorkflowServiceStub, workflow_id: str) -> message_pb2.StepNode:
    workflow = await stub.GetWorkflow(rr.GetWorkflowRequest(workflow_id=workflow_id))
    return workflow.steps[0]


@pytest.mark.parametrize(
    ("workflow_id", "kind", "children"),
    [
        ("two-approvals", KIND.STEP_KIND_PARALLEL, ["a", "b"]),
        ("routing", KIND.STEP_KIND_BRANCH, ["big-approval", "cheap"]),
        ("collect-until", KIND.STEP_KIND_DOUNTIL, ["collect"]),
        ("collect-while", KIND.STEP_KIND_DOWHILE, ["collect"]),
        ("items-3", KIND.STEP_KIND_FOREACH, ["item"]),
        ("sleepy-1", KIND.STEP_KIND_SLEEP, []),
        ("wake-past", KIND.STEP_KIND_SLEEP_UNTIL, []),
        ("outer-pair", KIND.STEP_KIND_WORKFLOW, ["parallel-1"]),
    ],
)
async def test_get_workflow_shows_each_shape_with_its_children(
    stub: WorkflowServiceStub, workflow_id: str, kind: int, children: list[str]
) -> None:
    """Every block of the step graph has its kind and its members as children."""
    node = await first_node(stub, workflow_id)
    assert node.kind == kind
    assert [c.id for c in node.children] == children


async def test_get_workflow_shows_nested_parallel_and_suspendable_members(
    stub: WorkflowServiceStub,
) -> None:
    """A nested workflow's children are its own blocks, down to the suspendable leaves."""
    wrapper = await first_node(stub, "outer-pair")
    (parallel,) = wrapper.children
    assert parallel.kind == KIND.STEP_KIND_PARALLEL
    assert [(c.id, c.kind, c.can_suspend) for c in parallel.children] == [
        ("left", KIND.STEP_KIND_STEP, True),
        ("right", KIND.STEP_KIND_STEP, True),
    ]
    assert wrapper.can_suspend and parallel.can_suspend
    foreach = await first_node(stub, "item-flows")
    assert foreach.kind == KIND.STEP_KIND_FOREACH
    assert [(c.id, c.kind) for c in foreach.children] == [("item-flow", KIND.STEP_KIND_WORKFLOW)]


async def test_get_workflow_shows_a_map_as_a_map(stub: WorkflowServiceStub) -> None:
    """`.map(fn)` appears in the step graph with kind MAP (enums.proto: `.map(fn)`)."""
    workflow = await stub.GetWorkflow(rr.GetWorkflowRequest(workflow_id="arithmetic"))
    assert [(s.id, s.kind) for s in workflow.steps] == [
        ("double", KIND.STEP_KIND_STEP),
        ("shift", KIND.STEP_KIND_MAP),
        ("plus", KIND.STEP_KIND_STEP),
    ]


async def test_get_workflow_answers_the_same_graph_every_time(stub: WorkflowServiceStub) -> None:
    """The step graph is rendered once per workflow (its JSON Schemas take milliseconds):
    later GetWorkflow and ListWorkflows calls answer exactly what the first one did."""
    first = await stub.GetWorkflow(rr.GetWorkflowRequest(workflow_id="arithmetic"))
    again = await stub.GetWorkflow(rr.GetWorkflowRequest(workflow_id="arithmetic"))
    listed = await stub.ListWorkflows(rr.ListWorkflowsRequest(page_size=1000))
    assert len(first.steps) == 3
    assert again == first
    assert [w for w in listed.workflows if w.workflow_id == "arithmetic"] == [first]


@pytest.mark.parametrize("workflow", load_workflows(FLOW_WORKFLOWS), ids=lambda wf: wf.id)
def test_a_committed_workflows_graph_is_its_walk_and_find_looks_nodes_up_in_it(
    workflow: Workflow,
) -> None:
    """The graph a committed workflow keeps (walked once) holds every node `walk` yields, in
    its order; `find` answers from it exactly what descending the definition answers: each
    walked path's node, None for a path through a step or to no node."""
    walked = list(walk(workflow))
    assert [(p, n) for p, (_, n) in graph(workflow).items()] == walked
    assert [i for i, _ in graph(workflow).values()] == list(range(len(walked)))
    assert graph(workflow) is graph(workflow)
    for at, node in walked:
        assert find(workflow, at) is node
        assert find(workflow, (*at, "no-such-step")) is None
    assert find(workflow, ("no-such-step",)) is None
    assert find(workflow, ()) is workflow


async def test_a_failing_nested_workflow_fails_its_step_and_says_when_it_ended(
    stub: WorkflowServiceStub,
) -> None:
    """The inner step fails; the nested workflow's own step is FAILED with the same error,
    and, as every step that ended, carries ended_at (it had none)."""
    result = await start(stub, "nested-breaks")
    assert result.status == enums_pb2.RUN_STATUS_FAILED
    for key in ("inner-breaks.breaks", "inner-breaks"):
        step = result.steps[key]
        assert step.status == STEP.STEP_STATUS_FAILED, key
        assert step.error.reason == "STEP_FAILED", key
        assert step.HasField("ended_at"), key


# -- bail ---------------------------------------------------------------------------------


async def test_a_bail_in_a_foreach_item_ends_the_run_and_the_foreach(
    stub: WorkflowServiceStub,
) -> None:
    result = await start(stub, "foreach-bail")
    assert result.status == SUCCESS
    assert to_json(result.result) == {"bailed_at": 1}
    stored = await get_result(stub, result.run_id)
    assert stored.steps["item"].status == STEP.STEP_STATUS_CANCELED
    assert stored.steps["item"].HasField("ended_at")
    assert {s.status for s in stored.steps.values()} <= {
        STEP.STEP_STATUS_SUCCESS,
        STEP.STEP_STATUS_CANCELED,
    }


async def test_a_bail_in_a_parallel_branch_cancels_the_suspended_sibling(
    stub: WorkflowServiceStub,
) -> None:
    """A run that bailed holds no suspended step: nothing lists it, no label leads to it,
    in the answer or stored. (The stored labels were read without include_resume_labels,
    so never; an outside audit found the label kept.)"""
    labels = message_pb2.OutputOptions(include_resume_labels=True)
    result = await start(stub, "parallel-bail", output_options=labels)
    assert result.status == SUCCESS
    assert to_json(result.result) == {"bailed": True}
    asked = rr.GetRunRequest(run_id=result.run_id, output_options=labels)
    stored = (await stub.GetRun(asked)).result
    assert stored.steps["quit"].status == STEP.STEP_STATUS_SUCCESS
    assert stored.steps["sibling"].status == STEP.STEP_STATUS_CANCELED
    assert not stored.suspended
    assert (dict(result.resume_labels), dict(stored.resume_labels)) == ({}, {})


async def watched(stub: WorkflowServiceStub, run_id: str) -> list[message_pb2.RunEvent]:
    """The run's stored events (it has settled: the stream ends)."""
    return [event async for event in stub.WatchRun(rr.WatchRunRequest(run_id=run_id))]


def ends_with_the_settle(events: list[message_pb2.RunEvent], canceled: set[str]) -> None:
    """RUN_SETTLED is the last event, and each step in `canceled` has a STEP_CANCELED
    event before it (a watcher that stops at the settle has seen every step end)."""
    assert events[-1].type == EVENT.RUN_EVENT_TYPE_RUN_SETTLED
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    ended = {
        ".".join(e.step.segments) for e in events if e.type == EVENT.RUN_EVENT_TYPE_STEP_CANCELED
    }
    assert ended == canceled


async def test_the_steps_a_bail_cancels_are_reported_before_the_run_settles(
    stub: WorkflowServiceStub,
) -> None:
    result = await start(stub, "parallel-bail")
    ends_with_the_settle(await watched(stub, result.run_id), {"sibling"})


async def test_a_failure_cancels_the_suspended_sibling_and_its_label(
    stub: WorkflowServiceStub,
) -> None:
    """A run that failed holds no suspended step and offers no resume label (it cannot be
    resumed); the sibling's end is in the event stream before the run's."""
    labels = message_pb2.OutputOptions(include_resume_labels=True)
    result = await start(stub, "parallel-fail", output_options=labels)
    assert result.status == enums_pb2.RUN_STATUS_FAILED
    assert result.steps["broken"].status == STEP.STEP_STATUS_FAILED
    assert result.steps["waiting"].status == STEP.STEP_STATUS_CANCELED
    assert result.steps["waiting"].HasField("ended_at")
    assert not result.suspended and not result.resume_labels
    ends_with_the_settle(await watched(stub, result.run_id), {"waiting"})


async def test_cancel_of_a_suspended_run_cancels_its_suspended_steps(
    stub: WorkflowServiceStub,
) -> None:
    """CancelRun of a SUSPENDED run: its suspended steps end CANCELED, its labels go, its
    update_time moves (it changed), and the stream reports each step before the settle."""
    started = await start(stub, "two-approvals")
    assert started.status == SUSPENDED
    before = await stub.GetRun(rr.GetRunRequest(run_id=started.run_id))

    await stub.CancelRun(rr.CancelRunRequest(run_id=started.run_id, reason="not needed"))

    run = await stub.GetRun(
        rr.GetRunRequest(
            run_id=started.run_id,
            output_options=message_pb2.OutputOptions(include_resume_labels=True),
        )
    )
    assert run.status == enums_pb2.RUN_STATUS_CANCELED
    assert {run.result.steps[s].status for s in ("a", "b")} == {STEP.STEP_STATUS_CANCELED}
    assert not run.result.suspended and not run.result.resume_labels
    assert run.update_time.ToNanoseconds() > before.update_time.ToNanoseconds()
    ends_with_the_settle(await watched(stub, started.run_id), {"a", "b"})


async def test_a_bail_in_a_nested_workflow_cancels_what_it_left_and_the_run_goes_on(
    stub: WorkflowServiceStub,
) -> None:
    result = await start(stub, "nested-bail")
    assert result.status == SUSPENDED
    assert paths(result) == [["outer-ask"]]
    assert result.steps["bailing-inner"].status == STEP.STEP_STATUS_SUCCESS
    assert output(result, "bailing-inner") == {"bailed": True}
    assert result.steps["bailing-inner.inner-ask"].status == STEP.STEP_STATUS_CANCELED
    done = await stub.ResumeRun(resume(result.run_id, {"ok": True}))
    assert done.status == SUCCESS
