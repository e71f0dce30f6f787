"""Many server replicas on one PostgreSQL database (issue 7, DESIGN.md §7).

Real `waystation serve` processes share one fresh database on a real PostgreSQL server
(`tests/support/postgres.py`) and run with a short lease (`--lease 2`), so that takeovers
happen within seconds. The tests check what users of a multi-replica deployment rely on:

- any replica takes any call: a run started on one replica is resumed on another and watched
  from a third, and the watcher sees every event exactly once, in order;
- claims on a suspension are compare-and-set across replicas: of two concurrent resumes of one
  suspension, sent to different replicas, exactly one wins and the other gets ABORTED
  (RESUME_CONFLICT), and the continuation runs once;
- a replica killed with SIGKILL (or drained with SIGTERM) has its runs taken over by the
  others once its lease expired; no step that completed runs again, and a durable sleep wakes
  once, at its stored time;
- migrations run once under a lock; a replica started with `--no-migrate` only checks the
  schema.

Steps count their side effects in log files (STYLE.md rule 21).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.api import (
    RichError,
    assert_eventually,
    call_error,
    path,
    rich_error,
    struct,
    to_json,
    value,
)
from tests.support.postgres import database_url
from tests.support.server_process import FAST_RECONNECT, ServerProcess
from tests.support.workflows import lines
from waystation.api.v1 import enums_pb2, message_pb2
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub
from waystation.storage.postgres import MIGRATIONS

WORKFLOWS = [
    "tests.support.workflows",
    "tests.support.crash_flows",
    "tests.support.flows",
    "tests.support.flows_extra",
]
LEASE = 2.0
"""Seconds a replica holds a run; a dead replica's runs are taken over after this (plus up
to LEASE / 3, the interval at which replicas look for expired leases)."""

RUN = enums_pb2.RunStatus
EV = enums_pb2.RunEventType

# A replica's channel reconnects quickly instead of backing off for seconds.


@dataclass
class Replica:
    name: str
    process: ServerProcess
    stub: WorkflowServiceStub


# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def pg_url() -> str:
    """A fresh, empty database on the test PostgreSQL server."""
    return database_url(f"replicas-{uuid.uuid4().hex}")


def server(
    tmp_path: Path,
    name: str,
    url: str,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """A server process on `url`, listening on 127.0.0.1; its log is `replica-<name>-server.log`."""
    return ServerProcess(
        tmp_path / f"replica-{name}.db",
        db_url=url,
        workflows=WORKFLOWS,
        extra_args=["--lease", str(LEASE), "--grace", "1", *extra_args],
        env=env,
    )


async def start_all(*processes: ServerProcess) -> None:
    """Start the processes at the same time; each start waits until it is healthy."""
    await asyncio.gather(*(asyncio.to_thread(p.start) for p in processes))


async def stop_all(*processes: ServerProcess) -> None:
    """SIGTERM every process still running, and wait for them to exit."""
    await asyncio.gather(*(asyncio.to_thread(p.stop) for p in processes if p.running))


async def running_replicas(
    stack: AsyncExitStack, tmp_path: Path, url: str, names: str, extra_args: Sequence[str] = ()
) -> list[Replica]:
    """One replica per letter of `names` on one database, started together, each with a
    client stub; stopped (and their channels closed) when `stack` closes."""
    processes = [server(tmp_path, name, url, extra_args) for name in names]
    stack.push_async_callback(stop_all, *processes)
    await start_all(*processes)
    replicas = []
    for name, process in zip(names, processes, strict=True):
        channel = grpc.aio.insecure_channel(process.address, options=FAST_RECONNECT)
        await stack.enter_async_context(channel)
        replicas.append(Replica(name, process, WorkflowServiceStub(channel)))
    return replicas


@pytest.fixture
async def cluster(tmp_path: Path, pg_url: str) -> AsyncIterator[list[Replica]]:
    """Three replicas, "a", "b" and "c", on one database, each with a client stub."""
    async with AsyncExitStack() as stack:
        yield await running_replicas(stack, tmp_path, pg_url, "abc")


@pytest.fixture
async def long_leased(tmp_path: Path, pg_url: str) -> AsyncIterator[list[Replica]]:
    """Two replicas, "a" and "b", with a 60 s lease: a run of a replica that dies waits
    for it, unless a RestartRun takes it over."""
    async with AsyncExitStack() as stack:
        yield await running_replicas(stack, tmp_path, pg_url, "ab", ["--lease", "60"])


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def start_run(
    stub: WorkflowServiceStub,
    workflow_id: str,
    run_id: str,
    data: Any,
    *,
    return_immediately: bool = False,
) -> message_pb2.WorkflowResult:
    return await stub.StartRun(
        rr.StartRunRequest(
            workflow_id=workflow_id,
            run_id=run_id,
            input_data=value(data),
            return_immediately=return_immediately,
        ),
        timeout=20,
    )


async def get_run(stub: WorkflowServiceStub, run_id: str) -> message_pb2.Run:
    return await stub.GetRun(rr.GetRunRequest(run_id=run_id), timeout=5)


async def wait_for_status(
    stub: WorkflowServiceStub, run_id: str, status: int, timeout: float
) -> message_pb2.Run:
    """Poll GetRun until the run has `status`; returns the run as it then is."""
    seen: list[message_pb2.Run] = []

    async def reached() -> bool:
        seen.append(await get_run(stub, run_id))
        return seen[-1].status == status

    await assert_eventually(reached, timeout=timeout, interval=0.1)
    return seen[-1]


async def in_step_b(log: Path) -> None:
    """Wait until the `crash-two-steps` run that logs to `log` has started its step B."""

    async def in_b() -> bool:
        return "start:B" in lines(log)

    await assert_eventually(in_b, timeout=10)


async def kill(replica: Replica) -> None:
    """SIGKILL: the replica dies at once, holding the leases of the runs it drives."""
    assert await asyncio.to_thread(replica.process.kill) == -9


def two_steps_request(run_id: str, request_id: str, log: Path) -> rr.StartRunRequest:
    """A StartRun of `crash-two-steps` (step B takes 3 s) with a request id."""
    return rr.StartRunRequest(
        workflow_id="crash-two-steps",
        run_id=run_id,
        request_id=request_id,
        input_data=value({"log": str(log), "seconds": 3}),
    )


def counts(log: Path) -> Counter[str]:
    return Counter(lines(log))


async def fetchval(url: str, sql: str) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


# -- any replica takes any call -----------------------------------------------------------


async def test_a_run_started_on_one_replica_resumes_on_another_and_is_watched_from_a_third(
    cluster: list[Replica], tmp_path: Path
) -> None:
    """A `counted` run started on replica A suspends; a WatchRun opened on replica C sees the
    resume made on replica B (STEP_RESUMED ... RUN_SETTLED success) and then ends by itself;
    A reads the result; every step ran once; `after_sequence` is exact on any replica."""
    a, b, c = cluster
    log = tmp_path / "across.log"
    run_id = new_id("across")
    started = await start_run(a.stub, "counted", run_id, {"log": str(log)})
    assert started.status == RUN.RUN_STATUS_SUSPENDED

    events: list[message_pb2.RunEvent] = []
    suspended = asyncio.Event()

    async def watch() -> None:
        async for event in c.stub.WatchRun(rr.WatchRunRequest(run_id=run_id)):
            events.append(event)
            if event.type == EV.RUN_EVENT_TYPE_RUN_SETTLED:
                suspended.set()

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(suspended.wait(), timeout=10)
        last_before = events[-1].sequence
        assert events[-1].run_status == RUN.RUN_STATUS_SUSPENDED

        resumed = await b.stub.ResumeRun(
            rr.ResumeRequest(run_id=run_id, resume_data=value({"value": 41})), timeout=20
        )
        assert resumed.status == RUN.RUN_STATUS_SUCCESS
        assert to_json(resumed.result) == {"value": 42}
        await asyncio.wait_for(watcher, timeout=10)  # the stream ends after the final settle
    finally:
        watcher.cancel()

    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    tail = [e for e in events if e.sequence > last_before]
    assert [(e.type, list(e.step.segments)) for e in tail] == [
        (EV.RUN_EVENT_TYPE_STEP_RESUMED, ["gate"]),
        (EV.RUN_EVENT_TYPE_STEP_SUCCEEDED, ["gate"]),
        (EV.RUN_EVENT_TYPE_STEP_STARTED, ["two"]),
        (EV.RUN_EVENT_TYPE_STEP_SUCCEEDED, ["two"]),
        (EV.RUN_EVENT_TYPE_RUN_SETTLED, []),
    ]
    assert tail[-1].run_status == RUN.RUN_STATUS_SUCCESS
    assert tail[-1].result.status == RUN.RUN_STATUS_SUCCESS

    # A reconnecting watcher on yet another replica gets exactly the events it missed.
    replay = a.stub.WatchRun(rr.WatchRunRequest(run_id=run_id, after_sequence=last_before))
    assert [e.sequence async for e in replay] == [e.sequence for e in tail]

    run = await get_run(a.stub, run_id)
    assert run.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(run.result.result) == {"value": 42}
    assert counts(log) == {"one": 1, "gate": 1, "two": 1}


# -- compare-and-set claims across replicas -----------------------------------------------

RACED_RUNS = 50
CONTINUATION = 1.0
"""Seconds the resumed `gate` step takes, so that the second resume of each pair arrives
while the first one's continuation still runs (a resume that arrives after the run settled is
RUN_NOT_SUSPENDED, not a conflict: DESIGN.md §4)."""


async def test_concurrent_resumes_spread_over_the_replicas_have_one_winner_per_suspension(
    cluster: list[Replica], tmp_path: Path
) -> None:
    """50 suspended runs (started round-robin on the three replicas) get two ResumeRun calls
    each, with different data, all 100 at once and round-robin over the replicas (the two
    calls of a run go to different replicas): exactly one call per run wins (SUCCESS, with its
    own data), the other is ABORTED with reason RESUME_CONFLICT, and the resumed step and the
    step after it ran exactly once for every run."""
    run_ids = [new_id(f"race{i}") for i in range(RACED_RUNS)]
    logs = {run_id: tmp_path / f"{run_id}.log" for run_id in run_ids}
    limit = asyncio.Semaphore(10)

    async def suspend(i: int, run_id: str) -> None:
        data = {"log": str(logs[run_id]), "seconds": CONTINUATION}
        async with limit:
            started = await start_run(cluster[i % 3].stub, "counted", run_id, data)
        assert started.status == RUN.RUN_STATUS_SUSPENDED

    await asyncio.gather(*(suspend(i, run_id) for i, run_id in enumerate(run_ids)))

    async def resume(k: int, run_id: str, data: int) -> message_pb2.WorkflowResult | RichError:
        request = rr.ResumeRequest(run_id=run_id, resume_data=value({"value": data}))
        try:
            return await cluster[k % 3].stub.ResumeRun(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            return rich_error(exc)

    calls = [(2 * i + j, run_id, 100 * i + j) for i, run_id in enumerate(run_ids) for j in (0, 1)]
    outcomes = await asyncio.gather(*(resume(k, run_id, data) for k, run_id, data in calls))

    kinds: Counter[str] = Counter()
    unexpected: list[str] = []
    winners: dict[str, list[int]] = {run_id: [] for run_id in run_ids}
    for (_, run_id, data), outcome in zip(calls, outcomes, strict=True):
        if isinstance(outcome, RichError):
            kind = f"{outcome.code.name} {outcome.reason}"
            if kind != "ABORTED RESUME_CONFLICT" or outcome.domain != "waystation.dev":
                unexpected.append(f"{run_id}: {kind}: {outcome.message}")
        else:
            kind = RUN.Name(outcome.status)
            assert to_json(outcome.result) == {"value": data + 1}
            winners[run_id].append(data)
        kinds[kind] += 1
    expected = {"RUN_STATUS_SUCCESS": RACED_RUNS, "ABORTED RESUME_CONFLICT": RACED_RUNS}
    assert kinds == expected, f"{dict(kinds)}; for example {unexpected[:3]}"
    assert all(len(w) == 1 for w in winners.values()), winners
    for run_id in run_ids:
        assert counts(logs[run_id]) == {"one": 1, "gate": 1, "two": 1}, run_id
    sample = run_ids[RACED_RUNS // 2]
    run = await get_run(cluster[0].stub, sample)
    assert run.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(run.result.result) == {"value": winners[sample][0] + 1}


async def test_resumes_with_one_request_id_sent_together_all_answer_the_first_outcome(
    cluster: list[Replica], tmp_path: Path
) -> None:
    """Six ResumeRun calls with one request id at the same moment, two on each replica (a
    client's retry racing its first try, or hedged requests): all found the key unused, one
    claimed the suspension, and the others were told RESUME_CONFLICT, "someone else
    resumed", although a later replay of the id answered SUCCESS. All six now answer the
    one outcome, and the step resumes once."""
    run_ids = [new_id("same") for _ in range(8)]
    logs = {run_id: tmp_path / f"{run_id}.log" for run_id in run_ids}
    for i, run_id in enumerate(run_ids):
        data = {"log": str(logs[run_id]), "seconds": 0.2}
        started = await start_run(cluster[i % 3].stub, "counted", run_id, data)
        assert started.status == RUN.RUN_STATUS_SUSPENDED

    async def resume(k: int, run_id: str) -> Any:
        request = rr.ResumeRequest(
            run_id=run_id, resume_data=value({"value": 5}), request_id=f"once-{run_id}"
        )
        try:
            answer = await cluster[k % 3].stub.ResumeRun(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            return rich_error(exc).reason
        return (RUN.Name(answer.status), answer.version, to_json(answer.result))

    calls = [(k, run_id) for run_id in run_ids for k in range(6)]
    answers = await asyncio.gather(*(resume(k, run_id) for k, run_id in calls))
    by_run: dict[str, set[Any]] = {run_id: set() for run_id in run_ids}
    for (_, run_id), answer in zip(calls, answers, strict=True):
        by_run[run_id].add(str(answer))
    for run_id, seen in by_run.items():
        run = await get_run(cluster[0].stub, run_id)
        outcome = ("RUN_STATUS_SUCCESS", run.result.version, to_json(run.result.result))
        assert seen == {str(outcome)}, seen
        assert counts(logs[run_id]) == {"one": 1, "gate": 1, "two": 1}, run_id


async def test_branches_resumed_together_on_two_replicas_are_both_resumed(
    cluster: list[Replica],
) -> None:
    """Resumes of two parallel branches of one run, sent together to two replicas: the one
    that lost the claim waits (polling the store) until the other replica's continuation
    has settled, then resumes its own branch; it was refused RESUME_CONFLICT."""
    a, b, _ = cluster
    for i in range(4):
        run_id = new_id("branches")
        started = await start_run(a.stub, "two-approvals", run_id, {})
        assert started.status == RUN.RUN_STATUS_SUSPENDED
        first = rr.ResumeRequest(run_id=run_id, resume_data=value({"ok": True}), label="label-a")
        second = rr.ResumeRequest(run_id=run_id, resume_data=value({"ok": True}), label="label-b")
        answers = await asyncio.gather(
            a.stub.ResumeRun(first, timeout=20), b.stub.ResumeRun(second, timeout=20)
        )
        statuses = sorted(answer.status for answer in answers)
        assert statuses == sorted([RUN.RUN_STATUS_SUCCESS, RUN.RUN_STATUS_SUSPENDED]), (i, statuses)


async def test_a_branch_resumed_on_one_replica_while_its_sibling_works_on_another_waits(
    cluster: list[Replica], tmp_path: Path
) -> None:
    """A resume sent to replica b, naming a branch that suspended while its sibling still
    works on replica a, waits (polling the store) until the run settles there, then resumes
    the branch: the sibling and the branch each ran once."""
    a, b, _ = cluster
    log = tmp_path / "busy-replicas.log"
    run_id = new_id("busy")
    data = {"log": str(log), "seconds": 3}
    await start_run(a.stub, "ask-while-busy", run_id, data, return_immediately=True)

    async def asked() -> bool:
        steps = (await get_run(b.stub, run_id)).result.steps
        return "ask" in steps and steps["ask"].status == enums_pb2.STEP_STATUS_SUSPENDED

    await assert_eventually(asked, timeout=10)
    assert "busy-end" not in lines(log)
    request = rr.ResumeRequest(run_id=run_id, resume_data=value({"ok": True}), label="ask-label")
    done = await b.stub.ResumeRun(request, timeout=20)
    assert done.status == RUN.RUN_STATUS_SUCCESS
    assert lines(log) == ["busy-start", "busy-end", "ask"]


async def test_a_branch_resumed_on_one_replica_while_its_sibling_sleeps_on_another(
    cluster: list[Replica], tmp_path: Path
) -> None:
    """approve-or-remind runs on replica a: "approve" suspends while the reminder sleeps
    2 s there, the run WAITING. A resume sent to replica b claims it and runs "approve"
    there at once (answered WAITING); a finds its lease gone and stops its sleep; b sleeps
    on to the stored wake-up time. The reminder and the run end once."""
    a, b, _ = cluster
    log = tmp_path / "remind-replicas.log"
    run_id = new_id("remind")
    started = await start_run(a.stub, "approve-or-remind", run_id, {"log": str(log)})
    assert started.status == RUN.RUN_STATUS_WAITING
    wake = started.steps["reminder.remind-nap"].wake_time.ToNanoseconds() / 1e9
    request = rr.ResumeRequest(run_id=run_id, resume_data=value({"ok": True}), step=path("approve"))
    resumed = await b.stub.ResumeRun(request, timeout=20)
    assert resumed.status == RUN.RUN_STATUS_WAITING
    assert lines(log) == ["approve"]

    run = await wait_for_status(a.stub, run_id, RUN.RUN_STATUS_SUCCESS, timeout=15)
    assert run.result.steps["reminder.remind"].started_at.ToNanoseconds() / 1e9 >= wake
    await asyncio.sleep(LEASE / 2)  # a's sleep, had it gone on, would have woken by now
    assert lines(log) == ["approve", "remind"]
    assert f"run {run_id} is no longer this replica's" in a.process.log


# -- takeover after a replica dies --------------------------------------------------------


async def test_runs_of_a_replica_killed_mid_step_are_finished_by_the_others(
    cluster: list[Replica], tmp_path: Path
) -> None:
    """Replica A drives four `crash-two-steps` runs and is killed with SIGKILL while step B
    (3 s) runs; after A's lease expires the surviving replicas take each run over (one
    takeover per run) and finish it: A completed before the kill and does not run again, B
    (cut short, its effect never committed) runs once more and completes once."""
    a, b, c = cluster
    logs = {new_id(f"killed{i}"): tmp_path / f"killed{i}.log" for i in range(4)}
    for run_id, log in logs.items():
        data = {"log": str(log), "seconds": 3}
        started = await start_run(a.stub, "crash-two-steps", run_id, data, return_immediately=True)
        assert started.status == RUN.RUN_STATUS_RUNNING

    async def all_in_b() -> bool:
        return all("start:B" in lines(log) for log in logs.values())

    await assert_eventually(all_in_b, timeout=10)
    await kill(a)

    for i, run_id in enumerate(logs):
        survivor = (b, c)[i % 2]
        run = await wait_for_status(survivor.stub, run_id, RUN.RUN_STATUS_SUCCESS, timeout=20)
        assert to_json(run.result.result)["ran"] == ["A", "B"]
    for run_id, log in logs.items():
        # B ran twice (cut short on A, then once on the replica that took the run over).
        assert counts(log) == {"start:A": 1, "done:A": 1, "start:B": 2, "done:B": 1}, run_id


async def test_restart_run_continues_a_dead_replicas_run_before_its_lease_expires(
    long_leased: list[Replica], tmp_path: Path
) -> None:
    """With a long lease, the run of a replica killed mid-step waits for its lease; a
    RestartRun with `force` on another replica takes it over at once: the run continues
    from its last committed step and ends SUCCESS, step A having run once. RestartRun of a
    finished run is then refused FAILED_PRECONDITION (RUN_NOT_ACTIVE). (A SQLite file takes
    one server, so this needs replicas on PostgreSQL.)"""
    log = tmp_path / "steps.log"
    dying, survivor = long_leased
    data = {"log": str(log), "seconds": 1}
    await start_run(dying.stub, "crash-two-steps", "orphan", data, return_immediately=True)

    await in_step_b(log)
    assert await asyncio.to_thread(dying.process.kill) == -9

    assert (await get_run(survivor.stub, "orphan")).status == RUN.RUN_STATUS_RUNNING
    forced = rr.RestartRunRequest(run_id="orphan", force=True)
    result = await survivor.stub.RestartRun(forced, timeout=15)
    assert result.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(result.result)["ran"] == ["A", "B"]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await survivor.stub.RestartRun(rr.RestartRunRequest(run_id="orphan"))
    error = rich_error(refused.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RUN_NOT_ACTIVE")
    assert counts(log) == {"start:A": 1, "done:A": 1, "start:B": 2, "done:B": 1}


async def test_a_restart_merges_its_request_context_key_by_key_over_the_stored_one(
    long_leased: list[Replica], tmp_path: Path
) -> None:
    """RestartRun's `request_context` is merged key by key over the one the run was
    started with, and the step that runs again sees the merge: through the API, and through
    `waystation runs restart --context`. Each run's step B ran twice (cut short by the
    SIGKILL), step A once. The restart's request id replays its outcome to a retry, and
    refuses a call that reuses it with another context."""
    dying, survivor = long_leased
    stored = {"tenant": "t1", "kept": 1}
    logs = {run_id: tmp_path / f"{run_id}.log" for run_id in ("by-api", "by-cli")}
    for run_id, log in logs.items():
        await dying.stub.StartRun(
            rr.StartRunRequest(
                workflow_id="crash-context",
                run_id=run_id,
                input_data=value({"log": str(log), "seconds": 1}),
                request_context=struct(stored),
                return_immediately=True,
            ),
            timeout=20,
        )
    for log in logs.values():
        await in_step_b(log)
    await kill(dying)

    merged = {"tenant": "t2", "kept": 1, "added": True}
    asked = {"run_id": "by-api", "force": True, "request_id": "restart-once"}
    over = struct({"tenant": "t2", "added": True})
    restart = rr.RestartRunRequest(**asked, request_context=over)
    by_api = await survivor.stub.RestartRun(restart, timeout=15)
    assert by_api.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(by_api.result)["context"] == merged
    again = await survivor.stub.RestartRun(restart, timeout=15)  # not RUN_NOT_ACTIVE: a replay
    assert (again.status, again.version) == (by_api.status, by_api.version)
    reused = rr.RestartRunRequest(**asked, request_context=struct({"tenant": "t3"}))
    error = await call_error(survivor.stub.RestartRun(reused, timeout=15))
    assert (error.code, set(error.violations)) == (grpc.StatusCode.INVALID_ARGUMENT, {"request_id"})

    command = [sys.executable, "-m", "waystation.cli", "--server", survivor.process.address]
    args = ["--json", "runs", "restart", "by-cli", "--force"]
    context = ["--context", '{"tenant": "t2", "added": true}']
    done = await asyncio.to_thread(
        subprocess.run, [*command, *args, *context], capture_output=True, text=True, timeout=45
    )
    assert done.returncode == 0, done.stderr
    by_cli = json.loads(done.stdout)
    assert by_cli["status"] == "RUN_STATUS_SUCCESS"
    assert by_cli["result"]["context"] == merged
    for log in logs.values():
        assert counts(log) == {"start:A": 1, "done:A": 1, "start:B": 2, "done:B": 1}


async def test_restart_run_without_force_leaves_a_live_replicas_run_alone(
    long_leased: list[Replica], tmp_path: Path
) -> None:
    """A RestartRun sent to another replica while the run's own replica is alive and
    holds its lease is refused RUN_NOT_ACTIVE, naming the replica: the run is not
    interrupted, its step runs once, and the caller waiting on the first replica gets the
    run's outcome."""
    log = tmp_path / "steps.log"
    first, other = long_leased
    data = {"log": str(log), "seconds": 2}
    waiting = asyncio.create_task(start_run(first.stub, "crash-two-steps", "alive", data))

    await in_step_b(log)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await other.stub.RestartRun(rr.RestartRunRequest(run_id="alive"), timeout=15)
    error = rich_error(refused.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RUN_NOT_ACTIVE")
    assert "force" in error.message
    # The metadata's status is the run's, and the replica that drives it is named apart.
    assert error.metadata["status"] == "running"
    assert error.metadata["owner"] and error.metadata["owner"] in error.message
    done = await waiting
    assert done.status == RUN.RUN_STATUS_SUCCESS
    assert counts(log) == {"start:A": 1, "done:A": 1, "start:B": 1, "done:B": 1}


async def test_a_forced_restart_of_a_live_replicas_run_answers_both_callers(
    cluster: list[Replica], tmp_path: Path
) -> None:
    """RestartRun with `force` on replica B while replica A still runs the step: B takes
    the run over and finishes it; the caller waiting on A gets that outcome, not ABORTED
    (RUN_CHANGED), and A logs no error: losing a run to another replica is no failure."""
    a, b, _ = cluster
    log = tmp_path / "steps.log"
    data = {"log": str(log), "seconds": 1}
    waiting = asyncio.create_task(start_run(a.stub, "crash-two-steps", "forced", data))

    await in_step_b(log)
    forced = await b.stub.RestartRun(rr.RestartRunRequest(run_id="forced", force=True))
    assert forced.status == RUN.RUN_STATUS_SUCCESS
    done = await asyncio.wait_for(waiting, timeout=LEASE * 3)
    assert (done.status, done.version) == (forced.status, forced.version)
    assert counts(log)["start:B"] == 2
    assert " ERROR " not in a.process.log


async def test_a_retry_on_another_replica_waits_for_the_first_calls_outcome(
    cluster: list[Replica], tmp_path: Path
) -> None:
    """A StartRun whose deadline expired while its run goes on in replica A, retried with
    the same request id on replica B, waits there for the run to settle and answers its
    outcome, as a retry on A does; not the RUNNING run as it stands."""
    a, b, _ = cluster
    log = tmp_path / "steps.log"
    request = two_steps_request("retried", "retry-1", log)
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await a.stub.StartRun(request, timeout=0.5)
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    again = await b.stub.StartRun(request, timeout=20)
    assert (again.run_id, again.status) == ("retried", RUN.RUN_STATUS_SUCCESS)
    assert to_json(again.result)["ran"] == ["A", "B"]
    assert counts(log) == {"start:A": 1, "done:A": 1, "start:B": 1, "done:B": 1}


async def test_a_retry_on_another_replica_after_the_first_one_died_waits_for_the_takeover(
    cluster: list[Replica], tmp_path: Path
) -> None:
    """Replica A dies with SIGKILL while it drives a StartRun; the client's retry with the
    same request id on replica B waits through A's lease and B's takeover and answers the
    outcome. Between the lease's end and the takeover it answered RUNNING, as if settled."""
    a, b, _ = cluster
    log = tmp_path / "steps.log"
    request = two_steps_request("orphaned-call", "retry-after-kill", log)
    first = asyncio.ensure_future(a.stub.StartRun(request, timeout=20))
    await in_step_b(log)
    await kill(a)
    with pytest.raises(grpc.aio.AioRpcError):
        await first
    again = await b.stub.StartRun(request, timeout=30)
    assert (again.run_id, again.status) == ("orphaned-call", RUN.RUN_STATUS_SUCCESS)
    assert to_json(again.result)["ran"] == ["A", "B"]
    assert counts(log) == {"start:A": 1, "done:A": 1, "start:B": 2, "done:B": 1}


async def test_a_cancel_through_another_replica_stops_the_step_where_it_runs(
    cluster: list[Replica], tmp_path: Path
) -> None:
    """CancelRun sent to replica B while replica A runs the run's step: A interrupts the
    step within a renewal of its leases (a third of a lease), writes nothing more, and the
    caller waiting on A gets the CANCELED run, as if A had been asked; A logs no error."""
    a, b, _ = cluster
    log = tmp_path / "steps.log"
    data = {"log": str(log), "seconds": 30}
    waiting = asyncio.create_task(start_run(a.stub, "crash-two-steps", "canceled", data))

    await in_step_b(log)
    canceled = await b.stub.CancelRun(rr.CancelRunRequest(run_id="canceled", reason="stop"))
    assert canceled.status == RUN.RUN_STATUS_CANCELED
    done = await asyncio.wait_for(waiting, timeout=LEASE * 3)
    assert done.status == RUN.RUN_STATUS_CANCELED
    assert done.error.reason == "CANCELED"
    assert counts(log) == {"start:A": 1, "done:A": 1, "start:B": 1}  # B never finished
    assert (await get_run(a.stub, "canceled")).result.version == canceled.result.version
    assert " ERROR " not in a.process.log


async def test_a_run_executing_on_another_replica_cannot_be_deleted(
    cluster: list[Replica], tmp_path: Path
) -> None:
    """DeleteRun sent to replica B while replica A runs the run's step is refused
    FAILED_PRECONDITION RUN_ACTIVE, as A itself refuses it. B looked only at the runs it
    drove: it deleted the run under A, whose caller then got NOT_FOUND, and A's execution
    went on committing into whatever run next took that id. Canceled, the run can go."""
    a, b, _ = cluster
    log = tmp_path / "steps.log"
    data = {"log": str(log), "seconds": 30}
    waiting = asyncio.create_task(start_run(a.stub, "crash-two-steps", "busy", data))

    await in_step_b(log)
    error = await call_error(b.stub.DeleteRun(rr.DeleteRunRequest(run_id="busy"), timeout=5))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RUN_ACTIVE")
    assert error.metadata["run_id"] == "busy"
    assert (await get_run(b.stub, "busy")).status == RUN.RUN_STATUS_RUNNING
    await b.stub.CancelRun(rr.CancelRunRequest(run_id="busy"), timeout=5)
    assert (await asyncio.wait_for(waiting, timeout=LEASE * 3)).status == (RUN.RUN_STATUS_CANCELED)
    await b.stub.DeleteRun(rr.DeleteRunRequest(run_id="busy"), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await get_run(a.stub, "busy")
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_call_on_a_run_deleted_and_made_again_elsewhere_is_not_told_of_the_new_one(
    cluster: list[Replica], tmp_path: Path
) -> None:
    """Replica B cancels, deletes and starts again (another workflow, under the same id)
    the run whose StartRun waits on replica A. A's caller is answered NOT_FOUND: its run is
    gone. It was answered the new run's outcome, another workflow's, as its own."""
    a, b, _ = cluster
    log = tmp_path / "steps.log"
    data = {"log": str(log), "seconds": 30}
    waiting = asyncio.create_task(start_run(a.stub, "crash-two-steps", "reborn", data))
    await in_step_b(log)
    await b.stub.CancelRun(rr.CancelRunRequest(run_id="reborn"), timeout=5)
    await b.stub.DeleteRun(rr.DeleteRunRequest(run_id="reborn"), timeout=5)
    other = tmp_path / "other.log"
    again = await start_run(b.stub, "counted", "reborn", {"log": str(other)})
    assert again.status == RUN.RUN_STATUS_SUSPENDED
    error = await asyncio.wait_for(call_error(waiting), timeout=LEASE * 3)
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
    assert (await get_run(a.stub, "reborn")).workflow_id == "counted"


async def test_runs_of_a_replica_drained_on_rollout_are_finished_by_the_others(
    cluster: list[Replica], tmp_path: Path
) -> None:
    """A rollout stops replica A with SIGTERM while it drives a run: A drains (exit code 0)
    and leaves the run RUNNING in the store; after A's lease expires another replica takes
    it over and finishes it, with no completed step run twice."""
    a, b, _ = cluster
    log = tmp_path / "drained.log"
    run_id = new_id("drained")
    data = {"log": str(log), "seconds": 3}
    await start_run(a.stub, "crash-two-steps", run_id, data, return_immediately=True)

    await in_step_b(log)
    assert await asyncio.to_thread(a.process.stop) == 0

    run = await wait_for_status(b.stub, run_id, RUN.RUN_STATUS_SUCCESS, timeout=20)
    assert to_json(run.result.result)["ran"] == ["A", "B"]
    assert counts(log) == {"start:A": 1, "done:A": 1, "start:B": 2, "done:B": 1}


async def test_a_draining_replica_tells_health_watchers_it_is_not_serving(
    cluster: list[Replica],
) -> None:
    """On SIGTERM a replica first tells the mesh that it stops: a grpc.health.v1 Watch
    stream (what client-side health checking and some meshes use) receives NOT_SERVING."""
    a = cluster[0]
    async with grpc.aio.insecure_channel(a.process.address) as channel:
        statuses = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=15
        )
        # Iterated, not read(): read() raises once the call has ended, and the drain ends
        # the stream right after NOT_SERVING, which a busy client may not have read yet.
        responses = aiter(statuses)
        assert (await anext(responses)).status == health_pb2.HealthCheckResponse.SERVING
        stopped = asyncio.create_task(asyncio.to_thread(a.process.stop))
        try:
            status = await asyncio.wait_for(anext(responses), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        finally:
            assert await stopped == 0


async def test_a_draining_replica_finishes_calls_in_flight_within_its_grace(
    cluster: list[Replica], tmp_path: Path
) -> None:
    """On SIGTERM a replica stops taking calls but answers those in flight: a ResumeRun
    whose continuation takes 0.5 s (within `--grace 1`) still answers SUCCESS, the process
    exits with code 0, and every step ran once."""
    a, b, _ = cluster
    log = tmp_path / "in-flight.log"
    run_id = new_id("in-flight")
    await start_run(b.stub, "counted", run_id, {"log": str(log), "seconds": 0.5})
    call = a.stub.ResumeRun(
        rr.ResumeRequest(run_id=run_id, resume_data=value({"value": 1})), timeout=20
    )
    await wait_for_status(b.stub, run_id, RUN.RUN_STATUS_RUNNING, timeout=10)
    stopped = asyncio.create_task(asyncio.to_thread(a.process.stop))
    assert (await call).status == RUN.RUN_STATUS_SUCCESS
    assert await stopped == 0
    assert counts(log) == {"one": 1, "gate": 1, "two": 1}


async def test_a_durable_sleep_on_a_killed_replica_wakes_once_at_its_stored_time(
    cluster: list[Replica], tmp_path: Path
) -> None:
    """A `sleepy-3` run started on replica A is sleeping when A is killed with SIGKILL; a
    surviving replica takes it over (after A's lease, before the wake-up time) and wakes it
    at the stored wake-up time, not 3 s after the takeover: "woke" is recorded exactly once."""
    a, b, _ = cluster
    log = tmp_path / "sleepy.log"
    run_id = new_id("sleepy")
    await start_run(a.stub, "sleepy-3", run_id, {"log": str(log)}, return_immediately=True)
    waiting = await wait_for_status(b.stub, run_id, RUN.RUN_STATUS_WAITING, timeout=10)
    await kill(a)
    nap = waiting.result.steps["nap"]
    wake_at = nap.wake_time.ToNanoseconds() / 1e9  # stored when the nap began on A
    assert wake_at == pytest.approx(nap.started_at.ToNanoseconds() / 1e9 + 3, abs=0.01)

    run = await wait_for_status(b.stub, run_id, RUN.RUN_STATUS_SUCCESS, timeout=15)
    nap, woke = run.result.steps["nap"], run.result.steps["woke"]
    woke_at = woke.started_at.ToNanoseconds() / 1e9
    # The lease (2 s) ran out before the wake-up time (3 s): the new owner slept only the
    # rest of the nap. Restarting the nap would wake it no earlier than wake_at + 2.
    assert wake_at <= nap.ended_at.ToNanoseconds() / 1e9 <= woke_at < wake_at + 1.5
    assert lines(log) == ["woke"]


async def test_a_forced_restart_of_a_sleeping_run_answers_waiting_at_once(
    long_leased: list[Replica],
) -> None:
    """RestartRun takes over a run that sleeps on a dead replica: it answered only when the
    run woke (a minute here; a year for a year's sleep), where a start or a resume of a
    run that goes to sleep answers WAITING at once."""
    a, b = long_leased
    run_id = new_id("sleeper")
    started = await start_run(a.stub, "sleepy-60", run_id, {"log": "/dev/null"})
    assert started.status == RUN.RUN_STATUS_WAITING
    await kill(a)

    restarted = await b.stub.RestartRun(rr.RestartRunRequest(run_id=run_id, force=True), timeout=5)

    assert restarted.status == RUN.RUN_STATUS_WAITING
    wake = restarted.steps["nap"].wake_time.ToNanoseconds()
    assert wake == started.steps["nap"].wake_time.ToNanoseconds()
    await b.stub.CancelRun(rr.CancelRunRequest(run_id=run_id), timeout=5)


# -- migrations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra_args", "env"),
    [(["--no-migrate"], {}), ([], {"WAYSTATION_MIGRATE": "false"})],
    ids=["flag", "environment"],
)
async def test_a_check_only_server_refuses_to_start_on_an_empty_database(
    tmp_path: Path, pg_url: str, extra_args: list[str], env: dict[str, str]
) -> None:
    """With `--no-migrate` (or WAYSTATION_MIGRATE=false) a server on a database without the
    schema exits with a non-zero code and says why, and creates no tables of its own."""
    process = server(tmp_path, "check-only", pg_url, extra_args)
    completed = await asyncio.to_thread(
        subprocess.run,
        process.command,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0, output
    assert "schema version 0" in output, output
    assert "run a server with migrations enabled first" in output, output
    assert await fetchval(pg_url, "SELECT to_regclass('runs') IS NULL")


async def test_a_check_only_server_starts_once_a_migrating_server_has_run(
    tmp_path: Path, pg_url: str
) -> None:
    """After a migrating server ran once, a `--no-migrate` server starts and drives runs."""
    migrator = server(tmp_path, "migrator", pg_url)
    await start_all(migrator)
    await stop_all(migrator)
    checker = server(tmp_path, "check-only", pg_url, ["--no-migrate"])
    try:
        await start_all(checker)
        await drive_a_counted_run(checker, tmp_path / "check-only.log")
    finally:
        await stop_all(checker)


async def drive_a_counted_run(process: ServerProcess, log: Path) -> None:
    """Start a `counted` run on `process`, resume it, and check it succeeded."""
    async with grpc.aio.insecure_channel(process.address) as channel:
        stub = WorkflowServiceStub(channel)
        run_id = new_id("checked")
        started = await start_run(stub, "counted", run_id, {"log": str(log)})
        assert started.status == RUN.RUN_STATUS_SUSPENDED
        resumed = await stub.ResumeRun(
            rr.ResumeRequest(run_id=run_id, resume_data=value({"value": 1})), timeout=20
        )
        assert resumed.status == RUN.RUN_STATUS_SUCCESS
    assert counts(log) == {"one": 1, "gate": 1, "two": 1}


async def test_a_check_only_server_needs_no_ddl_rights(tmp_path: Path, pg_url: str) -> None:
    """`--no-migrate` is for replicas without DDL rights: on a migrated database, a server
    that connects as a role with only SELECT/INSERT/UPDATE/DELETE on the tables (no CREATE on
    the schema, PostgreSQL's default since 15) starts and drives runs."""
    migrator = server(tmp_path, "migrator", pg_url)
    await start_all(migrator)
    await stop_all(migrator)
    role, password = f"ws_dml_{uuid.uuid4().hex[:10]}", secrets.token_hex(8)
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    except asyncpg.InsufficientPrivilegeError:
        await admin.close()
        pytest.skip("the test server's user may not create roles")
    try:
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
        await admin.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
        await admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        await admin.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        )
        checker = server(tmp_path, "dml-only", as_user(pg_url, role, password), ["--no-migrate"])
        try:
            await start_all(checker)
            await drive_a_counted_run(checker, tmp_path / "dml-only.log")
        finally:
            await stop_all(checker)
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


def as_user(url: str, user: str, password: str) -> str:
    """`url` with another user and password."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


async def test_two_servers_starting_together_on_an_empty_database_both_come_up(
    tmp_path: Path, pg_url: str
) -> None:
    """Two migrating servers started at the same moment on an empty database both become
    healthy; the advisory lock lets one of them migrate, and every migration is recorded
    once."""
    first, second = server(tmp_path, "first", pg_url), server(tmp_path, "second", pg_url)
    try:
        await start_all(first, second)
        versions = await fetchval(
            pg_url, "SELECT array_agg(version ORDER BY version) FROM schema_version"
        )
        assert list(versions) == list(range(1, len(MIGRATIONS) + 1))
        await drive_a_counted_run(second, tmp_path / "second.log")
    finally:
        await stop_all(first, second)
