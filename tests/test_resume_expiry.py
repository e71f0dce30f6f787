"""Resume expiry (issue 8, item 4): `ctx.suspend(payload, timeout=..., on_timeout=...)`.

A suspension with a timeout stores its deadline with the step; GetRun shows it as
`StepResult.resume_deadline` while the step is suspended. When the deadline passes, the run
FAILS with reason RESUME_TIMEOUT (`on_timeout="fail"`), or the step resumes once with the
default data and `resumed_by == "timeout"`. A caller's resume before the deadline wins and
the timeout never fires; a resume racing the timeout: exactly one of them takes effect. The
timeout acts once across a SIGKILL and a restart, and once among two servers on one
database.

Steps of `tests/support/expiry_flows.py` append a line per execution to a log file, so the
tests count side effects (STYLE.md rule 21) instead of trusting the final status alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import settings_for
from tests.support.api import assert_eventually, call_error, rich_error, to_json, value
from tests.support.server_process import FAST_RECONNECT, ServerProcess
from tests.support.workflows import lines
from waystation.api.v1 import enums_pb2, message_pb2
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub
from waystation.transport import RunningServer, create_server

WORKFLOWS = ["tests.support.workflows", "tests.support.expiry_flows"]
RUN = enums_pb2.RunStatus
STEP = enums_pb2.StepStatus
EV = enums_pb2.RunEventType
POLL = 0.25
"""How often a server looks for expired suspensions (upkeep.py `_expire_suspensions`)."""


# -- fixtures and helpers -----------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def seconds(stamp: Any) -> float:
    return float(stamp.seconds) + stamp.nanos / 1e9


async def start(
    stub: WorkflowServiceStub, workflow_id: str, data: Any, run_id: str = ""
) -> message_pb2.WorkflowResult:
    """Start a run and wait until it settles (here: at its first suspension)."""
    return await stub.StartRun(
        rr.StartRunRequest(
            workflow_id=workflow_id, run_id=run_id or new_id("exp"), input_data=value(data)
        ),
        timeout=20,
    )


async def get(stub: WorkflowServiceStub, run_id: str) -> message_pb2.Run:
    return await stub.GetRun(rr.GetRunRequest(run_id=run_id), timeout=10)


async def settled(
    stub: WorkflowServiceStub, run_id: str, status: int, timeout: float = 10.0
) -> message_pb2.Run:
    """The run once it has `status`."""

    async def check() -> bool:
        return (await get(stub, run_id)).status == status

    await assert_eventually(check, timeout=timeout)
    return await get(stub, run_id)


async def resume(stub: WorkflowServiceStub, run_id: str, data: Any) -> message_pb2.WorkflowResult:
    return await stub.ResumeRun(
        rr.ResumeRequest(run_id=run_id, resume_data=value(data)), timeout=20
    )


def expiring(log: Path, timeout: float, on_timeout: str = "default", **more: Any) -> dict[str, Any]:
    return {"log": str(log), "seconds": timeout, "on_timeout": on_timeout, **more}


def counts(log: Path) -> Counter[str]:
    return Counter(lines(log))


# -- the deadline, and what happens when it passes ------------------------------------------


async def test_get_run_shows_the_resume_deadline_while_suspended(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """resume_deadline = suspended_at + timeout, shown by StartRun's result and GetRun while
    the step is suspended, and gone once the step is no longer suspended."""
    started = await start(stub, "expiry-logged", expiring(tmp_path / "log", 0.5, "fail"))
    assert started.status == RUN.RUN_STATUS_SUSPENDED
    run = await get(stub, started.run_id)
    assert run.status == RUN.RUN_STATUS_SUSPENDED
    step = run.result.steps["decide"]
    assert step.status == STEP.STEP_STATUS_SUSPENDED
    assert step.HasField("resume_deadline")
    deadline = seconds(step.resume_deadline)
    assert deadline == pytest.approx(seconds(step.suspended_at) + 0.5, abs=0.05)
    assert seconds(started.steps["decide"].resume_deadline) == pytest.approx(deadline, abs=1e-3)

    failed = await settled(stub, started.run_id, RUN.RUN_STATUS_FAILED)
    assert not failed.result.steps["decide"].HasField("resume_deadline")


async def test_a_suspension_without_a_timeout_has_no_deadline_and_never_expires(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A plain suspend() stores no deadline: GetRun shows none, and the run stays suspended
    past several rounds of the timeout check."""
    log = tmp_path / "log"
    started = await start(stub, "counted", {"log": str(log)})
    assert started.status == RUN.RUN_STATUS_SUSPENDED
    assert not started.steps["gate"].HasField("resume_deadline")
    await asyncio.sleep(3 * POLL)
    run = await get(stub, started.run_id)
    assert run.status == RUN.RUN_STATUS_SUSPENDED
    assert not run.result.steps["gate"].HasField("resume_deadline")


async def test_an_expired_suspension_with_on_timeout_fail_fails_the_run_with_resume_timeout(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """When the deadline passes the run FAILS (reason RESUME_TIMEOUT, naming the step), the
    step is FAILED, not before the deadline; nothing runs again; a later resume is refused."""
    log = tmp_path / "log"
    started = await start(stub, "expiry-logged", expiring(log, 0.5, "fail"))
    deadline = seconds(started.steps["decide"].resume_deadline)

    run = await settled(stub, started.run_id, RUN.RUN_STATUS_FAILED)
    assert run.result.error.reason == "RESUME_TIMEOUT"
    assert list(run.result.error.step.segments) == ["decide"]
    step = run.result.steps["decide"]
    assert step.status == STEP.STEP_STATUS_FAILED
    assert step.error.reason == "RESUME_TIMEOUT"
    assert seconds(step.ended_at) >= deadline
    assert "after" not in run.result.steps
    assert counts(log) == Counter({"decide:run": 1})

    late = await call_error(resume(stub, started.run_id, {"value": 1}))
    assert late.code == grpc.StatusCode.FAILED_PRECONDITION
    assert late.reason == "RUN_NOT_SUSPENDED"
    await asyncio.sleep(2 * POLL)
    assert counts(log) == Counter({"decide:run": 1})
    assert (await get(stub, started.run_id)).status == RUN.RUN_STATUS_FAILED


async def test_the_expiring_test_workflow_fails_or_resumes_with_minus_one(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """tests/support/workflows.py `expiring`: input log "fail" fails with RESUME_TIMEOUT,
    anything else resumes with {"value": -1} by "timeout"."""
    fails = await start(stub, "expiring", {"log": "fail", "seconds": 0.3})
    resumes = await start(stub, "expiring", {"log": str(tmp_path / "x"), "seconds": 0.3})
    failed = await settled(stub, fails.run_id, RUN.RUN_STATUS_FAILED)
    assert failed.result.error.reason == "RESUME_TIMEOUT"
    done = await settled(stub, resumes.run_id, RUN.RUN_STATUS_SUCCESS)
    assert to_json(done.result.result) == {"value": -1}
    assert done.result.steps["decide"].resumed_by == "timeout"


async def test_an_expired_suspension_with_a_default_resumes_once_with_it(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """With a default the step resumes with it after the deadline, exactly once, recorded as
    resumed by "timeout"; the rest of the workflow runs on it and the run succeeds."""
    log = tmp_path / "log"
    started = await start(stub, "expiry-logged", expiring(log, 0.5))
    deadline = seconds(started.steps["decide"].resume_deadline)

    run = await settled(stub, started.run_id, RUN.RUN_STATUS_SUCCESS)
    assert to_json(run.result.result) == {"decided": -1, "checked": True}
    decide = run.result.steps["decide"]
    assert decide.resumed_by == "timeout"
    assert to_json(decide.resume_payload) == {"value": -1}
    assert seconds(decide.resumed_at) >= deadline
    assert not decide.HasField("resume_deadline")
    assert run.result.steps["after"].status == STEP.STEP_STATUS_SUCCESS

    await asyncio.sleep(3 * POLL)  # several more rounds of the timeout check
    once = Counter({"decide:run": 2, "decide:resumed:-1": 1, "after:-1": 1})
    assert counts(log) == once, lines(log)
    assert (await get(stub, started.run_id)).result.version == run.result.version


async def test_an_invalid_default_fails_the_step_when_it_suspends(
    stub: WorkflowServiceStub,
) -> None:
    """The default is validated against the resume schema when the step suspends: a default
    that does not fit fails the step at once (INVALID_SUSPEND_TIMEOUT), not at the deadline."""
    result = await start(stub, "expiry-bad-default", None)
    assert result.status == RUN.RUN_STATUS_FAILED
    assert result.error.reason == "INVALID_SUSPEND_TIMEOUT"


async def test_a_nested_suspension_expires_and_resumes_its_inner_step(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A timeout inside a nested workflow resumes the inner step by its full path; GetRun
    shows the inner step's deadline while it waits."""
    log = tmp_path / "log"
    started = await start(stub, "expiry-outer", expiring(log, 0.5))
    assert [list(p.segments) for p in started.suspended] == [["expiry-inner", "decide"]]
    waiting = await get(stub, started.run_id)
    inner = waiting.result.steps["expiry-inner.decide"]
    assert inner.HasField("resume_deadline")

    run = await settled(stub, started.run_id, RUN.RUN_STATUS_SUCCESS)
    assert to_json(run.result.result) == {"decided": -1, "checked": True}
    assert run.result.steps["expiry-inner.decide"].resumed_by == "timeout"
    assert counts(log) == Counter({"decide:run": 2, "decide:resumed:-1": 1, "after:-1": 1})


async def test_a_nested_suspension_that_expires_with_fail_fails_its_nested_workflow_too(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """With on_timeout "fail" inside a nested workflow, the inner step fails, and so does
    the nested workflow's own step, as when the inner step raises ("a nested workflow's
    failure fails its parent"); it was CANCELED, as an unrelated sibling would be."""
    started = await start(stub, "expiry-outer", expiring(tmp_path / "log", 0.5, "fail"))
    run = await settled(stub, started.run_id, RUN.RUN_STATUS_FAILED)
    steps = run.result.steps
    for path in ("expiry-inner.decide", "expiry-inner"):
        assert steps[path].status == STEP.STEP_STATUS_FAILED, path
        assert steps[path].error.reason == "RESUME_TIMEOUT", path
        assert steps[path].HasField("ended_at"), path
        assert not steps[path].HasField("suspend_payload"), path  # it waits no more
    assert "after" not in steps


async def test_parallel_suspensions_expire_each_at_its_own_deadline(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Two branches with different deadlines: the first expires and resumes while the other
    still waits (run SUSPENDED, its deadline still shown), then the second; each once."""
    log = tmp_path / "log"
    started = await start(stub, "expiry-pair", expiring(log, 1.0))
    assert started.status == RUN.RUN_STATUS_SUSPENDED
    left = seconds(started.steps["left"].resume_deadline)
    right = seconds(started.steps["right"].resume_deadline)
    assert right - left == pytest.approx(1.0, abs=0.1)

    async def left_settled() -> bool:
        run = await get(stub, started.run_id)
        return "left:resumed:-1" in lines(log) and run.status != RUN.RUN_STATUS_RUNNING

    await assert_eventually(left_settled)
    between = await get(stub, started.run_id)
    if time.time() < right - 0.1:  # right has not expired yet: the run still waits for it
        assert between.status == RUN.RUN_STATUS_SUSPENDED
        assert [list(p.segments) for p in between.result.suspended] == [["right"]]
        assert (
            between.result.steps["right"].resume_deadline == started.steps["right"].resume_deadline
        )
        assert between.result.steps["left"].resumed_by == "timeout"

    run = await settled(stub, started.run_id, RUN.RUN_STATUS_SUCCESS)
    assert run.result.steps["left"].resumed_by == "timeout"
    assert run.result.steps["right"].resumed_by == "timeout"
    await asyncio.sleep(2 * POLL)
    assert counts(log) == Counter(
        {"left:run": 2, "left:resumed:-1": 1, "right:run": 2, "right:resumed:-1": 1}
    ), lines(log)


async def test_a_parallel_suspension_that_times_out_fails_the_run_and_cancels_its_sibling(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """`soon` expires with on_timeout "fail" while `late` still waits: the run is FAILED
    RESUME_TIMEOUT naming `soon`, and `late` ends CANCELED (a failed run leaves no step
    suspended), reported before the settle; neither step runs again."""
    log = tmp_path / "log"
    started = await start(stub, "expiry-apart", expiring(log, 0.5, "fail"))
    assert [list(p.segments) for p in started.suspended] == [["soon"], ["late"]]

    run = await settled(stub, started.run_id, RUN.RUN_STATUS_FAILED)
    assert run.result.error.reason == "RESUME_TIMEOUT"
    assert list(run.result.error.step.segments) == ["soon"]
    steps = run.result.steps
    assert steps["soon"].status == STEP.STEP_STATUS_FAILED
    assert steps["late"].status == STEP.STEP_STATUS_CANCELED
    assert steps["late"].HasField("ended_at")
    assert not steps["late"].HasField("resume_deadline")
    assert STEP.STEP_STATUS_SUSPENDED not in {s.status for s in steps.values()}
    events = [e async for e in stub.WatchRun(rr.WatchRunRequest(run_id=started.run_id))]
    canceled = [list(e.step.segments) for e in events if e.type == EV.RUN_EVENT_TYPE_STEP_CANCELED]
    assert canceled == [["late"]]
    assert events[-1].type == EV.RUN_EVENT_TYPE_RUN_SETTLED
    assert counts(log) == Counter({"soon:run": 1, "late:run": 1})


@pytest.mark.parametrize("on_timeout", ["fail", "default"])
async def test_a_suspension_beside_a_sleeping_branch_times_out_during_the_sleep(
    stub: WorkflowServiceStub, tmp_path: Path, on_timeout: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`soon` suspends with a 0.5 s timeout while its sibling sleeps 4 s (the run WAITING):
    the timeout acts at its deadline, not when the nap ends. "default" resumes `soon` with
    its default during the nap, and the nap still wakes once at its stored time; "fail"
    fails the run at once, the nap ends CANCELED and never wakes. Either way the execution
    that slept stops quietly (no warning of a run changed elsewhere)."""
    log = tmp_path / "log"
    started = await start(stub, "expiry-beside-a-nap", expiring(log, 0.5, on_timeout, default=7))
    assert started.status == RUN.RUN_STATUS_WAITING
    assert [list(p.segments) for p in started.suspended] == [["soon"]]
    wake = seconds(started.steps["nap-then-wake.long-nap"].wake_time)
    if on_timeout == "fail":
        run = await settled(stub, started.run_id, RUN.RUN_STATUS_FAILED)
        assert time.time() < wake
        assert run.result.error.reason == "RESUME_TIMEOUT"
        assert run.result.steps["nap-then-wake.long-nap"].status == STEP.STEP_STATUS_CANCELED
        await asyncio.sleep(wake - time.time() + 0.5)
        assert counts(log) == Counter({"soon:run": 1})
        assert (await get(stub, started.run_id)).status == RUN.RUN_STATUS_FAILED
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        return

    async def resumed() -> bool:
        return "soon:resumed:7" in lines(log)

    await assert_eventually(resumed, timeout=3)
    assert time.time() < wake
    assert (await get(stub, started.run_id)).status == RUN.RUN_STATUS_WAITING
    run = await settled(stub, started.run_id, RUN.RUN_STATUS_SUCCESS)
    assert seconds(run.result.steps["nap-then-wake.woke"].started_at) >= wake
    await asyncio.sleep(0.3)
    assert counts(log) == Counter({"soon:run": 2, "soon:resumed:7": 1, "woke": 1})
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_the_earliest_of_several_deadlines_is_the_one_that_acts(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Branches with timeouts of 1 s and 6 s: the run fails at the first deadline, about
    1 s after it suspended, not once the later one has passed too."""
    started = await start(stub, "expiry-apart", expiring(tmp_path / "log", 1.0, "fail"))
    soon = seconds(started.steps["soon"].resume_deadline)
    late = seconds(started.steps["late"].resume_deadline)
    assert late - soon == pytest.approx(5.0, abs=0.1)

    run = await settled(stub, started.run_id, RUN.RUN_STATUS_FAILED, timeout=10)
    assert list(run.result.error.step.segments) == ["soon"]
    ended = seconds(run.result.steps["soon"].ended_at)
    assert soon <= ended < soon + 3  # the upkeep looks four times a second
    assert ended < late


async def test_foreach_items_expire_each_with_its_own_default(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Every suspended foreach item times out and resumes once with its own default."""
    log = tmp_path / "log"
    items = [{"log": str(log), "seconds": 0.5, "n": n} for n in (1, 2, 3)]
    started = await start(stub, "expiry-items", items)
    assert started.status == RUN.RUN_STATUS_SUSPENDED

    run = await settled(stub, started.run_id, RUN.RUN_STATUS_SUCCESS)
    assert to_json(run.result.result) == [
        {"n": 1, "value": 10},
        {"n": 2, "value": 20},
        {"n": 3, "value": 30},
    ]
    await asyncio.sleep(2 * POLL)
    expected = Counter()
    for n in (1, 2, 3):
        expected[f"item:{n}:run"] = 2
        expected[f"item:{n}:resumed:{n * 10}"] = 1
    assert counts(log) == expected, lines(log)


# -- a caller's resume against the timeout -------------------------------------------------


@pytest.mark.parametrize("on_timeout", ["fail", "default"])
async def test_a_resume_before_the_deadline_wins_and_the_timeout_never_fires(
    stub: WorkflowServiceStub, tmp_path: Path, on_timeout: str
) -> None:
    """A caller's resume before the deadline: SUCCESS with the caller's data, resumed by the
    caller; well past the deadline nothing changes and no step runs again."""
    log = tmp_path / "log"
    started = await start(stub, "expiry-logged", expiring(log, 0.75, on_timeout))
    deadline = seconds(started.steps["decide"].resume_deadline)

    resumed = await resume(stub, started.run_id, {"value": 7})
    assert time.time() < deadline, "the resume came too late to test this"
    assert resumed.status == RUN.RUN_STATUS_SUCCESS
    assert resumed.steps["decide"].resumed_by == "anonymous"
    assert not resumed.steps["decide"].HasField("resume_deadline")

    await asyncio.sleep(max(0.0, deadline - time.time()) + 3 * POLL)
    run = await get(stub, started.run_id)
    assert run.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(run.result.result) == {"decided": 7, "checked": True}
    assert run.result.steps["decide"].resumed_by == "anonymous"
    assert run.result.version == resumed.version
    assert counts(log) == Counter({"decide:run": 2, "decide:resumed:7": 1, "after:7": 1})


@pytest.mark.parametrize("on_timeout", ["fail", "default"])
async def test_a_resume_racing_the_timeout_takes_effect_exactly_once(
    stub: WorkflowServiceStub, tmp_path: Path, on_timeout: str
) -> None:
    """Resumes sent from well before to well after the deadline, some right on it: for each
    run exactly one of the caller and the timeout takes effect. The caller's call succeeds
    if and only if its data is the one the run went on with; a loser gets ABORTED
    (RESUME_CONFLICT) or FAILED_PRECONDITION (RUN_NOT_SUSPENDED); the step resumes once."""
    offsets = [-0.3, -0.1, -0.05, 0.0, 0.0, 0.02, 0.05, 0.1, 0.2, 0.6]
    logs = [tmp_path / f"log-{i}" for i in range(len(offsets))]
    runs = await asyncio.gather(
        *(start(stub, "expiry-logged", expiring(log, 0.6, on_timeout)) for log in logs)
    )

    async def race(result: message_pb2.WorkflowResult, offset: float) -> Any:
        deadline = seconds(result.steps["decide"].resume_deadline)
        await asyncio.sleep(max(0.0, deadline + offset - time.time()))
        try:
            return await resume(stub, result.run_id, {"value": 7})
        except grpc.aio.AioRpcError as exc:
            return rich_error(exc)

    answers = await asyncio.gather(*(race(r, o) for r, o in zip(runs, offsets, strict=True)))
    winners = Counter()
    for result, answer, log in zip(runs, answers, logs, strict=True):
        final = RUN.RUN_STATUS_FAILED if on_timeout == "fail" else RUN.RUN_STATUS_SUCCESS
        if isinstance(answer, message_pb2.WorkflowResult):
            winners["caller"] += 1
            assert answer.status == RUN.RUN_STATUS_SUCCESS
            run = await settled(stub, result.run_id, RUN.RUN_STATUS_SUCCESS)
            assert to_json(run.result.result) == {"decided": 7, "checked": True}
            assert run.result.steps["decide"].resumed_by == "anonymous"
            expected = Counter({"decide:run": 2, "decide:resumed:7": 1, "after:7": 1})
        else:
            winners["timeout"] += 1
            assert (answer.code, answer.reason) in (
                (grpc.StatusCode.ABORTED, "RESUME_CONFLICT"),
                (grpc.StatusCode.FAILED_PRECONDITION, "RUN_NOT_SUSPENDED"),
            ), answer
            run = await settled(stub, result.run_id, final)
            if on_timeout == "fail":
                assert run.result.error.reason == "RESUME_TIMEOUT"
                expected = Counter({"decide:run": 1})
            else:
                assert to_json(run.result.result) == {"decided": -1, "checked": True}
                assert run.result.steps["decide"].resumed_by == "timeout"
                expected = Counter({"decide:run": 2, "decide:resumed:-1": 1, "after:-1": 1})
        await asyncio.sleep(0)
        assert counts(log) == expected, (answer, lines(log))
    seen = [counts(log) for log in logs]
    await asyncio.sleep(2 * POLL)  # nothing acts later on
    assert [counts(log) for log in logs] == seen
    assert winners["caller"] >= 1 and winners["timeout"] >= 1, winners


@pytest.mark.parametrize("on_timeout", ["fail", "default"])
async def test_a_resume_after_the_deadline_is_refused_before_the_upkeep_acts(
    server: RunningServer, stub: WorkflowServiceStub, tmp_path: Path, on_timeout: str
) -> None:
    """The upkeep looks for passed deadlines four times a second (and, with hundreds due at
    once, takes seconds): a resume that came in between was accepted after the deadline.
    The resume now acts on the timeout first. Here the upkeep is stopped, so only the
    resume can."""
    server.engine._timer_task.cancel()
    log = tmp_path / "log"
    started = await start(stub, "expiry-logged", expiring(log, 0.3, on_timeout))
    deadline = seconds(started.steps["decide"].resume_deadline)
    await asyncio.sleep(max(0.0, deadline - time.time()) + 0.05)

    error = await call_error(resume(stub, started.run_id, {"value": 7}))

    assert (error.code, error.reason) in (
        (grpc.StatusCode.ABORTED, "RESUME_CONFLICT"),  # the timeout resumed it, just before
        (grpc.StatusCode.FAILED_PRECONDITION, "RUN_NOT_SUSPENDED"),
    ), error
    if on_timeout == "fail":
        run = await settled(stub, started.run_id, RUN.RUN_STATUS_FAILED)
        assert run.result.error.reason == "RESUME_TIMEOUT"
        assert counts(log) == Counter({"decide:run": 1})
    else:
        run = await settled(stub, started.run_id, RUN.RUN_STATUS_SUCCESS)
        assert run.result.steps["decide"].resumed_by == "timeout"
        assert counts(log) == Counter({"decide:run": 2, "decide:resumed:-1": 1, "after:-1": 1})


# -- across restarts and replicas ----------------------------------------------------------


@pytest.fixture
def process(tmp_path: Path) -> Any:
    server = ServerProcess(tmp_path / "expiry.db", workflows=WORKFLOWS)
    try:
        yield server
    finally:
        if server.running:
            server.kill()


@pytest.mark.parametrize("on_timeout", ["fail", "default"])
async def test_a_timeout_that_passed_while_the_server_was_down_acts_once_after_restart(
    process: ServerProcess, tmp_path: Path, on_timeout: str
) -> None:
    """A suspended run whose deadline is 2 s away; the server is SIGKILLed and restarted
    after the deadline: the timeout acts once (the run fails, or the step resumes once with
    the default); another kill and restart changes nothing."""
    log = tmp_path / "log"
    run_id = new_id("crash")
    await asyncio.to_thread(process.start)
    async with grpc.aio.insecure_channel(process.address, options=FAST_RECONNECT) as channel:
        stub = WorkflowServiceStub(channel)
        started = await start(stub, "expiry-logged", expiring(log, 2.0, on_timeout), run_id)
        assert started.status == RUN.RUN_STATUS_SUSPENDED
        deadline = seconds((await get(stub, run_id)).result.steps["decide"].resume_deadline)
        assert deadline - time.time() > 1.0, "too slow to kill before the deadline"
        await asyncio.to_thread(process.kill)

        await asyncio.sleep(max(0.0, deadline - time.time()) + 0.3)
        assert counts(log) == Counter({"decide:run": 1})  # nobody acted while it was down
        await asyncio.to_thread(process.start)

        if on_timeout == "fail":
            run = await settled(stub, run_id, RUN.RUN_STATUS_FAILED)
            assert run.result.error.reason == "RESUME_TIMEOUT"
            expected = Counter({"decide:run": 1})
        else:
            run = await settled(stub, run_id, RUN.RUN_STATUS_SUCCESS)
            assert to_json(run.result.result) == {"decided": -1, "checked": True}
            assert run.result.steps["decide"].resumed_by == "timeout"
            expected = Counter({"decide:run": 2, "decide:resumed:-1": 1, "after:-1": 1})
        assert counts(log) == expected, lines(log)
        version = run.result.version

        await asyncio.to_thread(process.kill)
        await asyncio.to_thread(process.start)
        await asyncio.sleep(3 * POLL)
        again = await get(stub, run_id)
        assert again.status == run.status and again.result.version == version
        assert counts(log) == expected, lines(log)


async def test_a_deadline_survives_a_restart_before_it_passes(
    process: ServerProcess, tmp_path: Path
) -> None:
    """Killed and restarted before the deadline: GetRun shows the same deadline, and the
    timeout then acts once, not before it."""
    log = tmp_path / "log"
    run_id = new_id("early")
    await asyncio.to_thread(process.start)
    async with grpc.aio.insecure_channel(process.address, options=FAST_RECONNECT) as channel:
        stub = WorkflowServiceStub(channel)
        await start(stub, "expiry-logged", expiring(log, 4.0), run_id)
        before = (await get(stub, run_id)).result.steps["decide"].resume_deadline
        await asyncio.to_thread(process.kill)
        await asyncio.to_thread(process.start)
        run = await get(stub, run_id)
        if time.time() < seconds(before):
            assert run.status == RUN.RUN_STATUS_SUSPENDED
            assert run.result.steps["decide"].resume_deadline == before
        run = await settled(stub, run_id, RUN.RUN_STATUS_SUCCESS, timeout=15)
        assert seconds(run.result.steps["decide"].resumed_at) >= seconds(before)
        assert counts(log) == Counter({"decide:run": 2, "decide:resumed:-1": 1, "after:-1": 1})


def _database(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    from tests.support.postgres import database_url

    return database_url(f"expiry-{uuid.uuid4().hex}")


async def _events(stub: WorkflowServiceStub, run_id: str) -> list[message_pb2.RunEvent]:
    """Every event of a settled run, read with WatchRun until it has no more."""
    out: list[message_pb2.RunEvent] = []
    call = stub.WatchRun(rr.WatchRunRequest(run_id=run_id), timeout=3)
    try:
        async for event in call:
            out.append(event)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc
    return out


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("on_timeout", ["fail", "default"])
async def test_two_servers_on_one_database_act_on_each_timeout_once(
    tmp_path: Path, kind: str, on_timeout: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two servers poll the same database for expired suspensions: each run's timeout acts
    exactly once (one STEP_RESUMED or one failing RUN_SETTLED, one continuation), whichever
    server gets there first; the loser's lost compare-and-set is not an error."""
    db = _database(kind, tmp_path)
    logs = [tmp_path / f"log-{i}" for i in range(6)]
    async with AsyncExitStack() as stack:
        servers = []
        for _ in range(2):
            running = await create_server(
                settings_for(tmp_path / "x.db", db=db, workflows=WORKFLOWS)
            )
            stack.push_async_callback(running.stop, 1.0)
            servers.append(running)
        stubs = []
        for running in servers:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
            await stack.enter_async_context(channel)
            stubs.append(WorkflowServiceStub(channel))
        runs = await asyncio.gather(
            *(
                start(stubs[i % 2], "expiry-logged", expiring(log, 1.0, on_timeout))
                for i, log in enumerate(logs)
            )
        )
        final = RUN.RUN_STATUS_FAILED if on_timeout == "fail" else RUN.RUN_STATUS_SUCCESS
        for result, log in zip(runs, logs, strict=True):
            run = await settled(stubs[0], result.run_id, final)
            await asyncio.sleep(0)
            if on_timeout == "fail":
                assert run.result.error.reason == "RESUME_TIMEOUT"
                expected = Counter({"decide:run": 1})
            else:
                assert run.result.steps["decide"].resumed_by == "timeout"
                expected = Counter({"decide:run": 2, "decide:resumed:-1": 1, "after:-1": 1})
            await asyncio.sleep(2 * POLL)
            assert counts(log) == expected, lines(log)
            events = await _events(stubs[1], result.run_id)
            kinds = Counter(e.type for e in events)
            assert kinds[EV.RUN_EVENT_TYPE_STEP_RESUMED] == int(on_timeout == "default")
            settles = [e for e in events if e.type == EV.RUN_EVENT_TYPE_RUN_SETTLED]
            failed = [e for e in settles if e.run_status == RUN.RUN_STATUS_FAILED]
            assert len(failed) == int(on_timeout == "fail")
            # The step's end is in the stream too, once, before the run's.
            assert kinds[EV.RUN_EVENT_TYPE_STEP_FAILED] == int(on_timeout == "fail")
            assert events[-1].type == EV.RUN_EVENT_TYPE_RUN_SETTLED
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not errors, [r.getMessage() for r in errors]
