"""Storage faults under a real in-process server and a real client (issue 8, item 1).

A FaultyStore wraps the real SqliteStore and injects: a commit that fails (StoreUnavailable),
a full disk (SQLite's own "database or disk is full"), a slow fsync (a write that lands late)
and a locked database (another connection holding the write lock beyond the busy timeout).
Each test shows that the caller gets UNAVAILABLE or ABORTED with a clear message, that the
run is exactly at its last committed state (read through GetRun and from the SQLite file
itself), that the server keeps serving and a later call succeeds once the fault is gone, and
that a run whose commit failed mid-execution is continued by the lease loop. Steps write
start/done lines (tests/crash/flows.py), so "ran exactly once" is counted, not assumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.api import (
    RichError,
    assert_eventually,
    call_error,
    path,
    rich_error,
    to_json,
    value,
)
from tests.support.faulty_store import (
    INJECTED,
    FaultyStore,
    is_create,
    settles,
    touches_step,
)
from waystation.api.v1 import enums_pb2, message_pb2, service_pb2_grpc
from waystation.api.v1 import request_response_pb2 as rr
from waystation.engine.model import RunStatus, StepStatus
from waystation.storage import SqliteStore
from waystation.transport import RunningServer, ServerSettings, create_server

Stub = service_pb2_grpc.WorkflowServiceStub
SUSPENDED = enums_pb2.RUN_STATUS_SUSPENDED
SUCCESS = enums_pb2.RUN_STATUS_SUCCESS
RUNNING = enums_pb2.RUN_STATUS_RUNNING


@dataclass
class Served:
    """An in-process server on a FaultyStore, a client, and where the run logs go."""

    store: FaultyStore
    stub: Stub
    db: Path
    logs: Path
    server: RunningServer

    def log(self, run_id: str) -> Path:
        return self.logs / f"{run_id}.log"


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """`await serve(lease_seconds=...)`: a server on a FaultyStore over tmp_path/faults.db."""
    opened: list[tuple[Served, grpc.aio.Channel]] = []

    async def start(**overrides: Any) -> Served:
        db = tmp_path / "faults.db"
        settings = ServerSettings(
            listen="127.0.0.1:0", db=f"sqlite:///{db}", workflows=["tests.crash.flows"]
        )
        for name, setting in overrides.items():
            setattr(settings, name, setting)
        store = FaultyStore(SqliteStore(str(db)))
        running = await create_server(settings, store=store)  # type: ignore[arg-type]
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        served = Served(store, Stub(channel), db, tmp_path, running)
        opened.append((served, channel))
        return served

    try:
        yield start
    finally:
        for served, channel in opened:
            await channel.close()
            served.store.clear()
            await served.store.free_disk()
            await served.server.stop(grace=1.0)


SERVING_HEALTH = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# -- helpers ---------------------------------------------------------------------------


def counts(log: Path) -> Counter[str]:
    """`kind step` -> how many lines, e.g. {"start one": 1, "done one": 1}."""
    if not log.exists():
        return Counter()
    return Counter(
        f"{kind} {where.partition(':')[2]}"
        for kind, where, *_ in (line.split() for line in log.read_text().splitlines())
    )


def ran_once(*steps: str) -> Counter[str]:
    return Counter({f"{kind} {step}": 1 for step in steps for kind in ("start", "done")})


def stored(db: Path, run_id: str) -> tuple[tuple[str, int] | None, dict[str, dict[str, Any]]]:
    """(status, version) of the run's row and its step records, read from the file itself
    (a separate read-only connection sees exactly what was committed)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT status, version FROM runs WHERE run_id = ?", (run_id,))
        header = row.fetchone()
        steps = conn.execute("SELECT path, record FROM steps WHERE run_id = ?", (run_id,))
        records = {p: json.loads(r) for p, r in steps.fetchall()}
    return (header[0], header[1]) if header else None, records


async def start_suspended(s: Served, run_id: str, **data: Any) -> message_pb2.WorkflowResult:
    """Start crash-open and wait until it suspends at its gate (after step one)."""
    result = await s.stub.StartRun(
        rr.StartRunRequest(
            workflow_id="crash-open",
            run_id=run_id,
            input_data=value({"log": str(s.log(run_id)), **data}),
        ),
        timeout=10,
    )
    assert result.status == SUSPENDED
    return result


def resume(run_id: str, data: Any, request_id: str = "") -> rr.ResumeRequest:
    return rr.ResumeRequest(
        run_id=run_id, step=path("gate"), resume_data=value(data), request_id=request_id
    )


async def get_run(s: Served, run_id: str) -> message_pb2.Run:
    return await s.stub.GetRun(rr.GetRunRequest(run_id=run_id), timeout=5)


async def eventually_status(s: Served, run_id: str, status: int, timeout: float = 10) -> Any:
    seen: list[message_pb2.Run] = []

    async def reached() -> bool:
        try:
            seen.append(await get_run(s, run_id))
        except grpc.aio.AioRpcError as exc:  # a write that lands late: not there yet
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return False
        return seen[-1].status == status

    await assert_eventually(reached, timeout=timeout)
    return seen[-1]


def assert_unavailable(error: RichError, *words: str) -> None:
    assert error.code == grpc.StatusCode.UNAVAILABLE, error
    assert error.reason == "STORE_UNAVAILABLE", error
    for word in words:
        assert word in error.message, error


async def assert_still_suspended(s: Served, run_id: str, version: int) -> None:
    """The run is SUSPENDED at `version` with its gate waiting and no resume data, through
    GetRun and in the file: nothing of a refused resume was written."""
    run = await get_run(s, run_id)
    assert run.status == SUSPENDED
    assert run.result.version == version
    gate = run.result.steps["gate"]
    assert gate.status == enums_pb2.STEP_STATUS_SUSPENDED
    assert not gate.HasField("resume_payload")
    header, records = stored(s.db, run_id)
    assert header == (RunStatus.SUSPENDED.value, version)
    assert records["gate"]["status"] == StepStatus.SUSPENDED.value
    assert "resume_payload" not in records["gate"]
    assert "two" not in records


# -- a commit that fails ---------------------------------------------------------------


async def test_a_start_whose_insert_fails_answers_unavailable_and_leaves_no_run(
    serve: Serve,
) -> None:
    """StartRun whose insert is refused by the store answers UNAVAILABLE (STORE_UNAVAILABLE,
    the store's message); the run does not exist (NOT_FOUND, no row, no step ran); the same
    call succeeds once the fault is gone, and its steps run once."""
    s = await serve()
    s.store.fail_writes(when=is_create)
    error = await call_error(start_suspended(s, "no-insert"))
    assert_unavailable(error, INJECTED)
    missing = await call_error(get_run(s, "no-insert"))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    assert stored(s.db, "no-insert") == (None, {})
    assert counts(s.log("no-insert")) == Counter()

    await start_suspended(s, "no-insert")
    assert counts(s.log("no-insert")) == ran_once("one")


async def test_a_failed_claim_leaves_the_run_suspended_at_its_version_and_a_retry_resumes_once(
    serve: Serve,
) -> None:
    """A resume whose claim (the compare-and-set that marks the gate RUNNING with the resume
    data) fails answers UNAVAILABLE; the run is SUSPENDED at the same version with no resume
    data, in GetRun and in the file; the gate did not run. A retry with the same request id
    is not mistaken for the failed call's replay: it resumes, and every step ran once."""
    s = await serve()
    version = (await start_suspended(s, "claim")).version
    s.store.fail_writes(when=touches_step("gate", StepStatus.RUNNING))
    error = await call_error(s.stub.ResumeRun(resume("claim", {"v": 1}, "r-1"), timeout=10))
    assert_unavailable(error, INJECTED)
    await assert_still_suspended(s, "claim", version)
    assert counts(s.log("claim")) == ran_once("one")

    result = await s.stub.ResumeRun(resume("claim", {"v": 1}, "r-1"), timeout=10)
    assert result.status == SUCCESS
    assert to_json(result.steps["gate"].resume_payload) == {"v": 1}
    assert counts(s.log("claim")) == ran_once("one", "gate", "two")


async def test_a_run_whose_commit_failed_mid_execution_is_continued_when_its_lease_expires(
    serve: Serve,
) -> None:
    """After the claim, the commit that starts step two fails: the resume's caller gets
    UNAVAILABLE, and the run is left RUNNING at its last committed transition (the gate
    done, two not begun). Nothing drives it then; when its lease (1 s) expires the lease loop
    takes it over and continues it to SUCCESS. Every step ran exactly once (two's failed
    commit came before two's work), and a retry with the same request id reports the end."""
    s = await serve(lease_seconds=1.0)
    await start_suspended(s, "mid")
    s.store.fail_writes(when=touches_step("two", StepStatus.RUNNING))
    error = await call_error(s.stub.ResumeRun(resume("mid", {"v": 2}, "r-2"), timeout=10))
    assert_unavailable(error, INJECTED)
    assert len(s.store.injected) == 1
    header, records = stored(s.db, "mid")
    assert header is not None and header[0] == RunStatus.RUNNING.value
    assert records["gate"]["status"] == StepStatus.SUCCESS.value
    assert "two" not in records

    run = await eventually_status(s, "mid", SUCCESS, timeout=10)
    assert to_json(run.result.steps["gate"].resume_payload) == {"v": 2}
    assert counts(s.log("mid")) == ran_once("one", "gate", "two")
    replay = await s.stub.ResumeRun(resume("mid", {"v": 2}, "r-2"), timeout=10)
    assert replay.status == SUCCESS


async def test_a_settlement_that_fails_is_retried_by_the_lease_loop_without_rerunning_a_step(
    serve: Serve,
) -> None:
    """The commit that settles the run SUCCESS fails twice (the run's own attempt, then the
    first takeover's): each time the caller or the lease loop sees StoreUnavailable and the
    run stays RUNNING at its last commit, with every step's SUCCESS stored. The next
    takeover settles it without running any step again: a completed step never re-runs."""
    s = await serve(lease_seconds=1.0)
    await start_suspended(s, "settle")
    s.store.fail_writes(count=2, when=settles(RunStatus.SUCCESS))
    error = await call_error(s.stub.ResumeRun(resume("settle", {"v": 3}), timeout=10))
    assert_unavailable(error, INJECTED)
    run = await eventually_status(s, "settle", SUCCESS, timeout=15)
    assert len(s.store.injected) == 2
    assert to_json(run.result.steps["gate"].resume_payload) == {"v": 3}
    assert counts(s.log("settle")) == ran_once("one", "gate", "two")


# -- a full disk -----------------------------------------------------------------------


async def test_a_full_disk_refuses_a_start_and_a_resume_with_unavailable_and_changes_nothing(
    serve: Serve,
) -> None:
    """With the database file unable to grow (SQLite's SQLITE_FULL), a start with a 20 kB
    input and a resume with 20 kB of data answer UNAVAILABLE "database or disk is full";
    no run was created, the suspended run is untouched at its version, reads still answer.
    Once there is room, both calls succeed and every step ran once."""
    s = await serve()
    version = (await start_suspended(s, "full-resume")).version
    await s.store.fill_disk()
    pad = "x" * 20_000
    error = await call_error(start_suspended(s, "full-start", pad=pad))
    assert_unavailable(error, "database or disk is full")
    assert stored(s.db, "full-start") == (None, {})
    assert counts(s.log("full-start")) == Counter()
    error = await call_error(s.stub.ResumeRun(resume("full-resume", {"pad": pad}), timeout=10))
    assert_unavailable(error, "database or disk is full")
    await assert_still_suspended(s, "full-resume", version)
    workflows = await s.stub.ListWorkflows(rr.ListWorkflowsRequest(), timeout=5)
    assert {wf.workflow_id for wf in workflows.workflows} == {"crash-load", "crash-open"}

    await s.store.free_disk()
    await start_suspended(s, "full-start", pad=pad)
    result = await s.stub.ResumeRun(resume("full-resume", {"pad": pad}), timeout=10)
    assert result.status == SUCCESS
    assert counts(s.log("full-start")) == ran_once("one")
    assert counts(s.log("full-resume")) == ran_once("one", "gate", "two")


# -- a slow fsync ----------------------------------------------------------------------


async def test_a_slow_commit_delays_its_caller_while_reads_answer_with_the_committed_state(
    serve: Serve,
) -> None:
    """The resume's claim takes 1 s to commit (a slow fsync). The resume waits for it and
    ends SUCCESS; while the claim is in flight, GetRun answers and shows the run as last
    committed (SUSPENDED at its version, no resume data): nothing half-written shows."""
    s = await serve()
    version = (await start_suspended(s, "slow")).version
    s.store.delay_writes(1.0, count=1, when=touches_step("gate", StepStatus.RUNNING))
    began = time.monotonic()
    resumed = asyncio.ensure_future(s.stub.ResumeRun(resume("slow", {"v": 4}), timeout=20))
    await assert_eventually(lambda: _true(bool(s.store.delayed)), timeout=5)
    await assert_still_suspended(s, "slow", version)
    assert not resumed.done()  # the claim was still in flight while GetRun answered
    result = await resumed
    assert time.monotonic() - began >= 1.0
    assert result.status == SUCCESS
    assert to_json(result.steps["gate"].resume_payload) == {"v": 4}
    assert counts(s.log("slow")) == ran_once("one", "gate", "two")


async def test_two_resumes_racing_through_a_slow_claim_have_one_winner_and_one_aborted(
    serve: Serve,
) -> None:
    """A slow claim widens the race: two resumes of one suspension both read it SUSPENDED
    and both try to claim it. Exactly one wins (SUCCESS with its data); the other is ABORTED
    RESUME_CONFLICT, with a message naming the run. The gate ran once, with the winner's
    data."""
    s = await serve()
    await start_suspended(s, "race")
    s.store.delay_writes(0.5, when=touches_step("gate", StepStatus.RUNNING))
    calls = [s.stub.ResumeRun(resume("race", {"v": n}), timeout=20) for n in (1, 2)]
    outcomes = await asyncio.gather(*(_outcome(call) for call in calls))
    wins = [o for o in outcomes if isinstance(o, message_pb2.WorkflowResult)]
    losses = [o for o in outcomes if isinstance(o, RichError)]
    assert len(wins) == 1 and len(losses) == 1, outcomes
    assert wins[0].status == SUCCESS
    assert losses[0].code == grpc.StatusCode.ABORTED
    assert losses[0].reason == "RESUME_CONFLICT"
    assert "race" in losses[0].message
    winner = to_json(wins[0].steps["gate"].resume_payload)
    run = await get_run(s, "race")
    assert to_json(run.result.steps["gate"].resume_payload) == winner
    assert counts(s.log("race")) == ran_once("one", "gate", "two")


async def test_a_resume_whose_deadline_expires_during_a_slow_claim_goes_on_without_waiting(
    serve: Serve,
) -> None:
    """The claim's commit takes 1 s; the caller's deadline is 0.3 s. The call ends
    DEADLINE_EXCEEDED, but the claim lands all the same (the resume was accepted, DESIGN.md
    §4), so the run must go on with that data at once: SUCCESS within a few seconds, not
    after the run's lease (15 s by default) runs out and the lease loop finds it orphaned."""
    s = await serve()  # the default lease: 15 s
    await start_suspended(s, "deadline")
    s.store.delay_writes(1.0, count=1, when=touches_step("gate", StepStatus.RUNNING))
    error = await call_error(s.stub.ResumeRun(resume("deadline", {"v": 5}), timeout=0.3))
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    run = await eventually_status(s, "deadline", SUCCESS, timeout=5)
    assert to_json(run.result.steps["gate"].resume_payload) == {"v": 5}
    assert counts(s.log("deadline")) == ran_once("one", "gate", "two")


async def test_a_start_whose_deadline_expires_during_a_slow_insert_goes_on_without_waiting(
    serve: Serve,
) -> None:
    """The same for StartRun: its insert takes 1 s, the caller gives up after 0.3 s. The run
    was created (it exists, RUNNING), so it must be driven at once: it reaches its gate
    within a few seconds, with step one run once, not after its 15 s lease expires."""
    s = await serve()
    s.store.delay_writes(1.0, count=1, when=is_create)
    request = rr.StartRunRequest(
        workflow_id="crash-open",
        run_id="late-start",
        input_data=value({"log": str(s.log("late-start"))}),
    )
    error = await call_error(s.stub.StartRun(request, timeout=0.3))
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    await eventually_status(s, "late-start", SUSPENDED, timeout=5)
    assert counts(s.log("late-start")) == ran_once("one")


# -- a locked database -----------------------------------------------------------------


async def test_a_locked_database_answers_unavailable_until_the_lock_is_released(
    serve: Serve,
) -> None:
    """While another connection holds the write lock beyond the writer's busy timeout,
    StartRun and ResumeRun answer UNAVAILABLE "database is locked"; no run is created, the
    suspended run stays at its version, and GetRun still answers (WAL readers are not
    blocked). Once the lock is released the same calls succeed, each step once."""
    s = await serve()
    version = (await start_suspended(s, "locked-resume")).version
    async with s.store.locked(busy_timeout=0.2):
        error = await call_error(start_suspended(s, "locked-start"))
        assert_unavailable(error, "database is locked")
        error = await call_error(s.stub.ResumeRun(resume("locked-resume", {"v": 6}), timeout=10))
        assert_unavailable(error, "database is locked")
        await assert_still_suspended(s, "locked-resume", version)
        missing = await call_error(get_run(s, "locked-start"))
        assert missing.code == grpc.StatusCode.NOT_FOUND

    await start_suspended(s, "locked-start")
    result = await s.stub.ResumeRun(resume("locked-resume", {"v": 6}), timeout=10)
    assert result.status == SUCCESS
    assert counts(s.log("locked-start")) == ran_once("one")
    assert counts(s.log("locked-resume")) == ran_once("one", "gate", "two")


async def test_health_is_not_serving_while_the_database_refuses_writes(serve: Serve) -> None:
    """While another connection holds the write lock beyond the writer's busy timeout, the
    lease upkeep's writes fail: within a round of it (a third of the lease) both health
    statuses are NOT_SERVING, and a health Watch is told; GetRun still answers. Once the
    lock is released they are SERVING again, and the Watch is told that too."""
    s = await serve(lease_seconds=0.9)
    version = (await start_suspended(s, "health-outage")).version
    async with grpc.aio.insecure_channel(f"127.0.0.1:{s.server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == SERVING_HEALTH

        async def statuses() -> set[int]:
            return {
                (await health.Check(health_pb2.HealthCheckRequest(service=name))).status
                for name in ("", "waystation.v1.WorkflowService")
            }

        async with s.store.locked(busy_timeout=0.2):
            await assert_eventually(lambda: _true_after(statuses(), {NOT_SERVING}), timeout=5)
            assert (await watch.read()).status == NOT_SERVING
            await assert_still_suspended(s, "health-outage", version)
        await assert_eventually(lambda: _true_after(statuses(), {SERVING_HEALTH}), timeout=5)
        assert (await watch.read()).status == SERVING_HEALTH
        watch.cancel()


async def _true_after(answer: Awaitable[set[int]], expected: set[int]) -> bool:
    return await answer == expected


async def test_a_run_interrupted_by_a_lock_mid_execution_is_continued_after_the_lock_ends(
    serve: Serve,
) -> None:
    """A run whose step one takes 1 s when the database gets locked cannot commit one's
    completion: StartRun answers UNAVAILABLE and the run stays RUNNING (one never
    committed as done). After the lock is released and the lease (1 s) has expired, the
    lease loop continues the run to its gate; one ran again (its completion was never
    committed: at-least-once for the step in flight), every other count is exact."""
    s = await serve(lease_seconds=1.0)
    log = s.log("lock-mid")
    started = asyncio.ensure_future(start_suspended(s, "lock-mid", work=1.0))
    await assert_eventually(lambda: _true(counts(log)["start one"] == 1), timeout=5)
    async with s.store.locked(busy_timeout=0.2):
        error = await call_error(started)
        assert_unavailable(error, "database is locked")
        assert (await get_run(s, "lock-mid")).status == RUNNING
    run = await eventually_status(s, "lock-mid", SUSPENDED, timeout=10)
    assert run.result.steps["one"].status == enums_pb2.STEP_STATUS_SUCCESS
    assert counts(log) == Counter({"start one": 2, "done one": 2})


async def _true(condition: bool) -> bool:
    return condition


async def _outcome(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        return rich_error(exc)
