"""Crash recovery with a real server process killed by SIGKILL (issue 3, DESIGN.md §4).

A run is interrupted mid-step, mid-sleep, mid-foreach and inside a resumed step whose caller
already gave up; the next process on the same SQLite file continues it at start-up without
any call. Steps append "start:<name>" / "done:<name>" lines to a log file, so the tests count
side effects across processes (STYLE.md rule 21): no step that completed before the kill runs
again, a step that was running when the process died runs again (at-least-once for that one
step, by design: its effect was never committed), and no acknowledged resume is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.api import assert_eventually, call_error, to_json, value
from tests.support.server_process import ServerProcess, client, kill, serving, start
from tests.support.workflows import lines
from waystation.api.v1 import enums_pb2, message_pb2, service_pb2_grpc
from waystation.api.v1 import request_response_pb2 as rr

Stub = service_pb2_grpc.WorkflowServiceStub
WORKFLOWS = ["tests.support.crash_flows", "tests.support.workflows"]

# A restarted server listens on the same port: reconnect quickly, not after seconds.


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "crash.db"


@pytest.fixture
def process(db: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(db, workflows=WORKFLOWS)
    try:
        yield server
    finally:
        if server.running:
            server.kill()


async def start_run(
    stub: Stub, workflow_id: str, run_id: str, data: Any, *, wait: bool = False
) -> message_pb2.WorkflowResult:
    """Start a run: answered once it is accepted, or with `wait` once it settles."""
    started = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id=workflow_id,
            run_id=run_id,
            input_data=value(data),
            return_immediately=not wait,
        )
    )
    assert started.run_id == run_id
    return started


async def get_run(stub: Stub, run_id: str) -> message_pb2.Run:
    return await stub.GetRun(rr.GetRunRequest(run_id=run_id))


async def eventually_status(
    stub: Stub, run_id: str, status: int, timeout: float = 15
) -> message_pb2.Run:
    """Poll GetRun until the run has `status`; returns that run."""
    seen: list[message_pb2.Run] = []

    async def reached() -> bool:
        seen.append(await get_run(stub, run_id))
        return seen[-1].status == status

    await assert_eventually(reached, timeout=timeout)
    return seen[-1]


async def eventually_logged(log: Path, *wanted: str, timeout: float = 10) -> None:
    """Poll the side-effect log until every line in `wanted` is in it."""

    async def logged() -> bool:
        return set(wanted) <= set(lines(log))

    await assert_eventually(logged, timeout=timeout)


@asynccontextmanager
async def restarted_with_recovery_fail(db: Path) -> AsyncIterator[Stub]:
    """A new process on the same file with `--recovery fail` (on a port of its own)."""
    failing = ServerProcess(db, workflows=WORKFLOWS, extra_args=["--recovery", "fail"])
    async with serving(failing) as stub:
        yield stub


def seconds(ts: Any) -> float:
    return float(ts.ToNanoseconds()) / 1e9


async def test_a_run_killed_mid_step_finishes_after_restart_and_completed_steps_do_not_rerun(
    process: ServerProcess, tmp_path: Path
) -> None:
    """A run killed while step B sleeps (step A already done) is continued by the next
    process at start-up, without any call, and ends SUCCESS. A ran exactly once; B completed
    exactly once. B *started* twice: it was running when the process died and its effect was
    never committed, so it runs again from its stored input (at-least-once for the one step
    that was in flight; every completed step is exactly-once)."""
    log = tmp_path / "steps.log"
    await start(process)
    async with client(process) as stub:
        await start_run(stub, "crash-two-steps", "mid-step", {"log": str(log), "seconds": 2})
        await eventually_logged(log, "start:B")
        assert lines(log) == ["start:A", "done:A", "start:B"]
        assert (await get_run(stub, "mid-step")).status == enums_pb2.RUN_STATUS_RUNNING

    await kill(process)
    await start(process)

    async with client(process) as stub:
        run = await eventually_status(stub, "mid-step", enums_pb2.RUN_STATUS_SUCCESS)
    assert to_json(run.result.result) == {"log": str(log), "seconds": 2, "ran": ["A", "B"]}
    counts = Counter(lines(log))
    assert counts == {"start:A": 1, "done:A": 1, "start:B": 2, "done:B": 1}


async def test_a_run_killed_after_a_resume_during_its_sleep_wakes_once_after_restart(
    db: Path, tmp_path: Path
) -> None:
    """approve-or-remind: "approve" is resumed while the reminder sleeps (2 s), then the
    process is killed; the next one continues the sleep to its stored wake-up time, and the
    reminder and the resumed step each ran once."""
    server = ServerProcess(db, workflows=[*WORKFLOWS, "tests.support.flows_extra"])
    log = tmp_path / "remind.log"
    try:
        await start(server)
        async with client(server) as stub:
            data = {"log": str(log)}
            started = await start_run(stub, "approve-or-remind", "remind", data, wait=True)
            assert started.status == enums_pb2.RUN_STATUS_WAITING
            resumed = await stub.ResumeRun(
                rr.ResumeRequest(run_id="remind", resume_data=value({"ok": True}))
            )
            assert resumed.status == enums_pb2.RUN_STATUS_WAITING
        await kill(server)
        await start(server)
        async with client(server) as stub:
            run = await eventually_status(stub, "remind", enums_pb2.RUN_STATUS_SUCCESS)
    finally:
        if server.running:
            server.kill()
    wake = started.steps["reminder.remind-nap"].wake_time.ToNanoseconds()
    assert run.result.steps["reminder.remind"].started_at.ToNanoseconds() >= wake
    assert lines(log) == ["approve", "remind"]


async def test_a_run_killed_between_retries_goes_on_from_the_next_attempt(
    process: ServerProcess, tmp_path: Path
) -> None:
    """Killed in the delay after attempt 0 failed: the next process ran the step from
    attempt 0 again (a crash restarted its retry budget: five attempts where three are
    configured), and GetRun showed attempt 0 through every retry. The attempt about to run
    is committed before the delay."""
    log = tmp_path / "retries.log"
    await start(process)
    async with client(process) as stub:
        await start_run(stub, "crash-slow-retries", "retried", {"log": str(log)})
        await eventually_logged(log, "attempt:0")

        async def next_attempt_stored() -> bool:
            run = await get_run(stub, "retried")
            return run.result.steps["flaky"].attempt == 1

        await assert_eventually(next_attempt_stored, timeout=1.5)
        assert lines(log) == ["attempt:0"]

    await kill(process)
    await start(process)

    async with client(process) as stub:
        run = await eventually_status(stub, "retried", enums_pb2.RUN_STATUS_SUCCESS)
    assert to_json(run.result.result) == {"retry_count": 2}
    assert run.result.steps["flaky"].attempt == 2
    assert lines(log) == ["attempt:0", "attempt:1", "attempt:2"]


async def test_a_run_killed_mid_sleep_wakes_at_its_stored_time_after_restart(
    process: ServerProcess, tmp_path: Path
) -> None:
    """A run killed 1.5 s into a 3 s durable sleep is WAITING in the next process and wakes
    at the wake-up time stored before the kill, not 3 s after the restart: the sleep keeps
    its original start, lasts about 3 s in all, and the run ends within 3 + 4 s of its start.
    The step before the sleep does not run again; the step after it runs once."""
    log = tmp_path / "nap.log"
    await start(process)
    async with client(process) as stub:
        started = time.monotonic()
        await start_run(stub, "crash-nap-3", "mid-sleep", {"log": str(log)})
        waiting = await eventually_status(stub, "mid-sleep", enums_pb2.RUN_STATUS_WAITING)
        nap_started = seconds(waiting.result.steps["nap"].started_at)
        # Be well inside the sleep, so that a sleep restarted from zero would show.
        await asyncio.sleep(max(0.0, started + 1.5 - time.monotonic()))
        assert (await get_run(stub, "mid-sleep")).status == enums_pb2.RUN_STATUS_WAITING

    await kill(process)
    assert lines(log) == ["before"]
    await start(process)

    async with client(process) as stub:
        if time.monotonic() < started + 2.8:  # the restart took less than ~1.3 s
            assert (await get_run(stub, "mid-sleep")).status == enums_pb2.RUN_STATUS_WAITING
        run = await eventually_status(stub, "mid-sleep", enums_pb2.RUN_STATUS_SUCCESS)
        finished = time.monotonic()

    assert started + 3 - 0.2 <= finished < started + 3 + 4
    nap = run.result.steps["nap"]
    assert seconds(nap.started_at) == pytest.approx(nap_started)
    # Restarted from zero, the sleep would have lasted at least 1.5 s + the restart + 3 s.
    assert 3 - 0.1 <= seconds(nap.ended_at) - nap_started < 4.4
    assert to_json(run.result.result) == {"woke": True}
    assert Counter(lines(log)) == {"before": 1, "woke": 1}


async def test_a_foreach_killed_mid_window_finishes_in_order_without_rerunning_done_items(
    process: ServerProcess, tmp_path: Path
) -> None:
    """A foreach of 6 items at concurrency 2, killed while items 2 and 3 run (0 and 1 done,
    4 and 5 not started), ends SUCCESS after a restart with its output in input order. Every
    item completed exactly once; items 0 and 1 did not start again; the two items in flight
    at the kill started again (at-least-once for a running step)."""
    log = tmp_path / "items.log"
    items = [{"log": str(log), "i": i, "seconds": 1.5} for i in range(6)]
    await start(process)
    async with client(process) as stub:
        await start_run(stub, "crash-items-2", "mid-foreach", items)
        await eventually_logged(log, "start:2", "start:3")
        before = Counter(lines(log))
        assert before == Counter(["start:0", "done:0", "start:1", "done:1", "start:2", "start:3"])

    await kill(process)
    await start(process)

    async with client(process) as stub:
        run = await eventually_status(stub, "mid-foreach", enums_pb2.RUN_STATUS_SUCCESS)
    assert to_json(run.result.result) == [{"i": i} for i in range(6)]
    counts = Counter(lines(log))
    assert {i: counts[f"done:{i}"] for i in range(6)} == dict.fromkeys(range(6), 1)
    assert {i: counts[f"start:{i}"] for i in range(6)} == {0: 1, 1: 1, 2: 2, 3: 2, 4: 1, 5: 1}
    item = run.result.steps["item"]
    assert item.status == enums_pb2.STEP_STATUS_SUCCESS
    assert sorted(item.items) == list(range(6))
    assert all(r.status == enums_pb2.STEP_STATUS_SUCCESS for r in item.items.values())


async def test_a_resume_accepted_before_the_kill_is_not_lost(
    process: ServerProcess, tmp_path: Path
) -> None:
    """A ResumeRun whose client deadline (0.5 s) expires while the resumed step still runs
    was accepted all the same (DESIGN.md §4): GetRun shows RUNNING. The process is killed
    before the step ends; the next process continues the run with that resume data, so it
    ends SUCCESS with value + 1, and each of one, gate, two ran exactly once."""
    log = tmp_path / "counted.log"
    await start(process)
    async with client(process) as stub:
        data = {"log": str(log), "seconds": 3}
        started = await start_run(stub, "counted", "acked", data, wait=True)
        assert started.status == enums_pb2.RUN_STATUS_SUSPENDED
        expired = await call_error(
            stub.ResumeRun(
                rr.ResumeRequest(run_id="acked", resume_data=value({"value": 41})), timeout=0.5
            )
        )
        assert expired.code == grpc.StatusCode.DEADLINE_EXCEEDED
        running = await get_run(stub, "acked")
        assert running.status == enums_pb2.RUN_STATUS_RUNNING
        assert lines(log) == ["one"]

    await kill(process)
    assert lines(log) == ["one"]
    await start(process)

    async with client(process) as stub:
        run = await eventually_status(stub, "acked", enums_pb2.RUN_STATUS_SUCCESS)
    assert to_json(run.result.result) == {"value": 42}
    assert to_json(run.result.steps["gate"].resume_payload) == {"value": 41}
    assert Counter(lines(log)) == {"one": 1, "gate": 1, "two": 1}


async def test_recovery_fail_marks_a_run_killed_mid_step_failed_and_lets_a_sleeper_wake(
    process: ServerProcess, db: Path, tmp_path: Path
) -> None:
    """With `--recovery fail`, a run that was RUNNING at the kill is FAILED after the restart
    with error reason RUN_INTERRUPTED, and its interrupted step is not run again; a watch
    replays its history and ends with the FAILED settlement. A run that was WAITING in a
    durable sleep is not interrupted work: it still wakes and succeeds."""
    steps_log, nap_log = tmp_path / "steps.log", tmp_path / "nap.log"
    await start(process)
    async with client(process) as stub:
        await start_run(stub, "crash-two-steps", "to-fail", {"log": str(steps_log), "seconds": 5})
        await start_run(stub, "crash-nap-3", "sleeper", {"log": str(nap_log)})
        await eventually_logged(steps_log, "start:B")
        await eventually_status(stub, "sleeper", enums_pb2.RUN_STATUS_WAITING)

    await kill(process)
    async with restarted_with_recovery_fail(db) as stub:
        run = await get_run(stub, "to-fail")
        assert run.status == enums_pb2.RUN_STATUS_FAILED
        assert run.result.error.reason == "RUN_INTERRUPTED"
        assert run.result.steps["A"].status == enums_pb2.STEP_STATUS_SUCCESS
        events = [e async for e in stub.WatchRun(rr.WatchRunRequest(run_id="to-fail"))]
        assert events[0].type == enums_pb2.RUN_EVENT_TYPE_RUN_STARTED
        assert events[-1].type == enums_pb2.RUN_EVENT_TYPE_RUN_SETTLED
        assert events[-1].run_status == enums_pb2.RUN_STATUS_FAILED
        await eventually_status(stub, "sleeper", enums_pb2.RUN_STATUS_SUCCESS)
    assert Counter(lines(steps_log)) == {"start:A": 1, "done:A": 1, "start:B": 1}
    assert Counter(lines(nap_log)) == {"before": 1, "woke": 1}


async def test_a_run_whose_only_unfinished_branch_sleeps_is_waiting_and_survives_recovery_fail(
    process: ServerProcess, db: Path, tmp_path: Path
) -> None:
    """Two parallel branches sleep; the short one wakes and finishes while the long one
    sleeps on. The run was RUNNING from then until the long one woke: ListRuns of WAITING
    runs missed it, and after a crash `--recovery fail` failed its sleep as interrupted
    work. It is WAITING, until the long nap's wake-up time, and it wakes after the crash."""
    log = tmp_path / "naps.log"
    await start(process)
    async with client(process) as stub:
        await start_run(stub, "crash-two-naps", "naps", {"log": str(log)})
        await eventually_logged(log, "woke:short")
        await asyncio.sleep(0.2)  # the short branch's end is committed
        run = await get_run(stub, "naps")
        assert run.status == enums_pb2.RUN_STATUS_WAITING
        long_nap = run.result.steps["nap-long.nap"]
        assert long_nap.status == enums_pb2.STEP_STATUS_WAITING
        waiting = await stub.ListRuns(rr.ListRunsRequest(statuses=[enums_pb2.RUN_STATUS_WAITING]))
        assert [r.run_id for r in waiting.runs] == ["naps"]

    await kill(process)
    async with restarted_with_recovery_fail(db) as stub:
        run = await eventually_status(stub, "naps", enums_pb2.RUN_STATUS_SUCCESS)
    assert to_json(run.result.result) == {
        "nap-short": {"woke": "short"},
        "nap-long": {"woke": "long"},
    }
    assert Counter(lines(log)) == {"woke:short": 1, "woke:long": 1}


async def test_recovery_fail_reports_the_interrupted_step_failed_not_running(
    process: ServerProcess, db: Path, tmp_path: Path
) -> None:
    """A run failed by `--recovery fail` shows no step still RUNNING: the step that was in
    flight at the kill is FAILED with reason RUN_INTERRUPTED (as a canceled run's steps are
    CANCELED), so a failed run never reports work in progress."""
    log = tmp_path / "steps.log"
    await start(process)
    async with client(process) as stub:
        await start_run(stub, "crash-two-steps", "half-done", {"log": str(log), "seconds": 5})
        await eventually_logged(log, "start:B")

    await kill(process)
    async with restarted_with_recovery_fail(db) as stub:
        run = await get_run(stub, "half-done")
    assert run.status == enums_pb2.RUN_STATUS_FAILED
    step_b = run.result.steps["B"]
    assert step_b.status == enums_pb2.STEP_STATUS_FAILED
    assert step_b.error.reason == "RUN_INTERRUPTED"


async def test_a_step_that_failed_does_not_run_again_when_a_sleeping_run_is_continued(
    process: ServerProcess, tmp_path: Path
) -> None:
    """A parallel branch failed (committed FAILED) while its sibling sleeps; the process is
    killed. The next one continues the run from its committed steps: the failed step stays
    failed (it ran again on every restart), the sibling wakes, and the run fails."""
    log = tmp_path / "broken.log"
    await start(process)
    async with client(process) as stub:
        await start_run(stub, "crash-broken-beside-a-nap", "broken", {"log": str(log)})
        waiting = await eventually_status(stub, "broken", enums_pb2.RUN_STATUS_WAITING)
        assert waiting.result.steps["broken"].status == enums_pb2.STEP_STATUS_FAILED

    await kill(process)
    await start(process)

    async with client(process) as stub:
        run = await eventually_status(stub, "broken", enums_pb2.RUN_STATUS_FAILED)
    assert run.result.steps["broken"].status == enums_pb2.STEP_STATUS_FAILED
    assert run.result.steps["napper"].status == enums_pb2.STEP_STATUS_SUCCESS
    assert Counter(lines(log)) == {"broken": 1, "woke": 1}
