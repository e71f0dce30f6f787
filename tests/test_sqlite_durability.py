"""How the SQLite store makes commits durable (storage/sqlite.py, storage/protocol.py).

Commits are applied on the event loop with `synchronous=NORMAL`; a durable write then waits
for an fsync of the WAL that it shares with every durable write committed before that fsync
began; checkpoints run off the loop. Checked on real files: which writes fsync, how many
writers share one fsync and one transaction, that a commit that was not fsynced survives
the death of its process, that the WAL is checkpointed into the database as it grows, and
what keeps a transition small (the pages it writes, a lease that moves only when it must).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import to_json, value
from waystation import StepContext, create_step, create_workflow
from waystation.api.v1 import enums_pb2
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub
from waystation.engine import Engine, StartCommand, Workflow
from waystation.engine.model import RunRecord, RunStatus, StepRecord, StepStatus
from waystation.storage import Commit, SqliteStore, StoreConflict, StoreUnavailable
from waystation.storage.sqlite import CHECKPOINT_BYTES, CHECKPOINT_EVERY

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(str(tmp_path / "durable.db"))
    await opened.setup()
    try:
        yield opened
    finally:
        await opened.close()


def fsyncs(store: SqliteStore) -> int:
    assert store._wal is not None
    return store._wal.fsyncs


def wal_frames(store: SqliteStore) -> int:
    """Frames the WAL file has room for: the pages appended so far, as long as no
    checkpoint restarted it (a few commits in a new store never do)."""
    assert store._writer is not None
    page_size: int = store._writer.execute("PRAGMA page_size").fetchone()[0]
    return os.path.getsize(store._path + "-wal") // (page_size + 24)


def new_run(run_id: str) -> RunRecord:
    return RunRecord(run_id, "wf", status=RunStatus.RUNNING, version=1, input={"n": 1})


def step_commit(run: RunRecord, n: int, *, durable: bool, payload: str = "") -> Commit:
    """The next transition of `run`: one step record changed."""
    expected = run.version
    run.version += 1
    record = StepRecord(StepStatus.SUCCESS, output={"n": n, "pad": payload})
    return Commit(run, expected, {f"s{n}": record}, durable=durable)


async def test_only_durable_writes_wait_for_an_fsync(store: SqliteStore) -> None:
    """A step transition in the middle of a run (durable=False) is committed and readable
    without an fsync; the answer's commit (durable) makes one, which carries the earlier
    ones with it. Creates are durable unless told otherwise."""
    run = new_run("r")
    before = fsyncs(store)
    await store.create_run(run, durable=False)
    await store.commit(step_commit(run, 1, durable=False))
    await store.commit(step_commit(run, 2, durable=False))
    assert fsyncs(store) == before
    snapshot = await store.load("r")
    assert snapshot is not None and snapshot.run.version == 3 and len(snapshot.steps) == 2

    await store.commit(step_commit(run, 3, durable=True))
    assert fsyncs(store) == before + 1
    await store.create_run(new_run("other"))
    assert fsyncs(store) == before + 2


async def test_concurrent_durable_writers_share_fsyncs(store: SqliteStore) -> None:
    """64 runs settling at once: every commit lands, and they share a few fsyncs (one
    running while the next collects everyone who arrives meanwhile) instead of 64."""
    runs = [new_run(f"r{i}") for i in range(64)]
    await asyncio.gather(*(store.create_run(run, durable=False) for run in runs))
    before = fsyncs(store)
    await asyncio.gather(*(store.commit(step_commit(run, 1, durable=True)) for run in runs))
    made = fsyncs(store) - before
    assert 1 <= made <= 3, made
    for run in runs:
        loaded = await store.load_run(run.run_id)
        assert loaded is not None and loaded.version == 2


async def test_writes_submitted_over_a_few_busy_turns_share_one_transaction(
    store: SqliteStore,
) -> None:
    """Writers rarely arrive in the same turn of the loop: 32 runs whose commits come one
    to eight turns apart still share one transaction, because a batch waits while other
    callbacks are ready."""
    runs = [new_run(f"r{i}") for i in range(32)]
    await asyncio.gather(*(store.create_run(run, durable=False) for run in runs))

    async def later(run: RunRecord, turns: int) -> None:
        for _ in range(turns):
            await asyncio.sleep(0)
        await store.commit(step_commit(run, 1, durable=False))

    before = store._batches
    await asyncio.gather(*(later(run, i % 8) for i, run in enumerate(runs)))
    assert store._batches - before == 1
    for run in runs:
        loaded = await store.load_run(run.run_id)
        assert loaded is not None and loaded.version == 2


async def test_a_cancelled_durable_writer_still_commits(store: SqliteStore) -> None:
    """A caller that stops waiting (its deadline passed) does not stop its write, nor the
    fsync other writers share."""
    runs = [new_run("a"), new_run("b")]
    for run in runs:
        await store.create_run(run)
    first = asyncio.create_task(store.commit(step_commit(runs[0], 1, durable=True)))
    second = asyncio.create_task(store.commit(step_commit(runs[1], 1, durable=True)))
    await asyncio.sleep(0)
    first.cancel()
    await second
    with pytest.raises(asyncio.CancelledError):
        await first
    for run in runs:
        loaded = await store.load_run(run.run_id)
        assert loaded is not None and loaded.version == 2


WRITER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from waystation.engine.model import RunRecord, RunStatus, StepRecord, StepStatus
    from waystation.storage import Commit, SqliteStore

    async def main(path):
        store = SqliteStore(path)
        await store.setup()
        run = RunRecord("r", "wf", status=RunStatus.RUNNING, version=1)
        await store.create_run(run, durable=False)
        for n in range(1, 4):
            run.version += 1
            record = StepRecord(StepStatus.SUCCESS, output={"n": n})
            await store.commit(Commit(run, run.version - 1, {f"s{n}": record}, durable=False))
        print(store._wal.fsyncs, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint, no fsync

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_commits_that_were_not_fsynced_survive_the_death_of_their_process(
    tmp_path: Path,
) -> None:
    """A process SIGKILLed right after non-durable commits returned (no fsync made for
    them, no close): a new store on the file finds every one of them."""
    path = tmp_path / "killed.db"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'server'}{os.pathsep}{ROOT}"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", WRITER, str(path)],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == -9, done.stderr.decode()
    assert done.stdout.decode().strip() == "0"  # nothing was fsynced
    reopened = SqliteStore(str(path))
    await reopened.setup()
    try:
        snapshot = await reopened.load("r")
        assert snapshot is not None
        assert snapshot.run.version == 4
        assert sorted(snapshot.steps) == [("s1",), ("s2",), ("s3",)]
    finally:
        await reopened.close()


async def test_the_wal_stays_bounded_under_writes_without_pause(
    store: SqliteStore, tmp_path: Path
) -> None:
    """The writer never checkpoints; once the WAL is past CHECKPOINT_BYTES the store copies
    it into the database from its own thread, then finishes on the loop, so that the WAL
    restarts from its beginning although commits never stop (without that last step the
    WAL of a busy server grew by gigabytes). The writer here never waits for anything but
    its commits, which are applied at once: it must still give the loop turns, or the
    checkpoint's completion would never run."""
    wal = f"{tmp_path / 'durable.db'}-wal"
    run = new_run("big")
    await store.create_run(run)
    pad = "x" * 8192
    # Over five times CHECKPOINT_BYTES of WAL frames if nothing were checkpointed.
    commits = 5 * CHECKPOINT_BYTES // len(pad)
    for n in range(commits):
        await store.commit(step_commit(run, n % 50, durable=False, payload=pad))
    assert store._wal is not None
    assert store._wal.checkpoints >= 3
    assert size(wal) < 3 * CHECKPOINT_BYTES, size(wal)
    loaded = await store.load("big")
    assert loaded is not None and loaded.run.version == run.version
    assert len(loaded.steps) == 50


async def test_a_restarted_wal_is_not_finished_on_the_loop_until_it_is_full_again(
    store: SqliteStore, tmp_path: Path
) -> None:
    """A WAL that restarts is overwritten from its beginning, not truncated: its file stays
    past CHECKPOINT_BYTES. The checkpoint thread still copies it now and then, but the
    finishing step, which blocks the event loop for two fsyncs, waits until the WAL holds
    CHECKPOINT_BYTES of frames again (it ran after every few dozen batches when the file's
    size was taken for what the WAL holds)."""
    assert store._wal is not None
    run = new_run("big")
    await store.create_run(run)
    pad = "x" * 8192
    n = 0
    while store._wal.finishes == 0:  # fill the file past the threshold and restart it
        await store.commit(step_commit(run, n % 50, durable=False, payload=pad))
        n += 1
    checkpoints = store._wal.checkpoints
    small = "y" * 256
    for i in range(8 * CHECKPOINT_EVERY):  # a few hundred KB of frames
        await store.commit(step_commit(run, i % 50, durable=False, payload=small))
        if i % 16 == 0:
            await asyncio.sleep(0.01)  # let the checkpoint thread's completions run
    assert size(f"{tmp_path / 'durable.db'}-wal") >= CHECKPOINT_BYTES
    assert store._wal.checkpoints > checkpoints
    assert store._wal.finishes == 1


def size(path: str) -> int:
    return os.path.getsize(path)


@pytest.mark.parametrize("writers", [1, 8], ids=["alone", "together"])
async def test_a_failed_fsync_fails_the_durable_writers_and_the_next_one_succeeds(
    store: SqliteStore, tmp_path: Path, writers: int
) -> None:
    """An fsync that fails (here: EIO, as on a broken disk) raises StoreUnavailable in every
    durable writer that shared it, whether it ran on the loop (a writer alone) or in the
    fsync thread (writers together); the store keeps working, and the next fsync serves the
    next writers. (A WAL file that is gone is no passing failure: see the test below.)"""
    runs = [new_run(f"r{i}") for i in range(writers)]
    await asyncio.gather(*(store.create_run(run) for run in runs))

    def broken_disk(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", broken_disk)  # the operating system's, not ours
        outcomes = await asyncio.gather(
            *(store.commit(step_commit(run, 1, durable=True)) for run in runs),
            return_exceptions=True,
        )
    for outcome in outcomes:
        assert isinstance(outcome, StoreUnavailable), outcome
        assert "fsync of the WAL failed" in str(outcome)
    await asyncio.gather(*(store.commit(step_commit(run, 2, durable=True)) for run in runs))
    for run in runs:
        loaded = await store.load_run(run.run_id)
        assert loaded is not None and loaded.version == 3


async def test_every_transition_is_committed_before_the_next_step_runs(
    stub: WorkflowServiceStub, db_path: Path
) -> None:
    """A step's end rides with the next step's start (one commit, not two), and the last
    step's end with the settle: each step, when its code starts, finds every earlier step
    SUCCESS and itself RUNNING in the database file, and the settled run has all three."""
    result = await stub.StartRun(
        rr.StartRunRequest(workflow_id="observed", input_data=value({"db": str(db_path)}))
    )
    assert result.status == enums_pb2.RUN_STATUS_SUCCESS
    assert to_json(result.result)["seen"] == {
        "first": ["first=running"],
        "second": ["first=success", "second=running"],
        "third": ["first=success", "second=success", "third=running"],
    }
    # One commit per step start, each carrying the previous step's end, and the settle
    # carrying the last one's: the run's creation is version 1, then 3 starts and the settle.
    assert result.version == 5
    stored = await stub.GetRun(rr.GetRunRequest(run_id=result.run_id))
    statuses = {k: v.status for k, v in stored.result.steps.items()}
    assert statuses == dict.fromkeys(("first", "second", "third"), enums_pb2.STEP_STATUS_SUCCESS)


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (
            "SELECT run_id FROM runs WHERE status = 'suspended' AND due_at <= ? LIMIT ?",
            "runs_by_due",
        ),
        (
            "SELECT run_id FROM runs WHERE status IN ('running', 'waiting')"
            " AND (lease_until IS NULL OR lease_until < ?) LIMIT ?",
            "runs_by_lease",
        ),
    ],
    ids=["due-runs", "expired-leases"],
)
async def test_the_upkeep_queries_use_their_partial_indexes(
    store: SqliteStore, query: str, index: str
) -> None:
    """The lease and due-time indexes hold only the runs they are for (a suspended run with
    no deadline is in neither, so its transitions do not touch them); the upkeep queries
    must still find them by index, not by scanning a store of a million runs."""
    assert store._writer is not None
    plan = store._writer.execute(f"EXPLAIN QUERY PLAN {query}", (1.0, 10)).fetchall()
    assert any(f"USING INDEX {index}" in row[-1] for row in plan), plan


async def test_a_transition_that_changes_no_indexed_column_writes_only_its_own_pages(
    store: SqliteStore,
) -> None:
    """SQLite rewrites an index entry whenever its column is assigned, even to the value it
    holds. A step transition of a running run changes none of the columns the indexes of
    `runs` hold, so it appends two pages to the WAL (the run's row and the step's record),
    not the four index pages that assigning every column would add; a status change
    rewrites the indexes it moves in."""
    run = new_run("r")
    await store.create_run(run, durable=False)
    await store.commit(step_commit(run, 1, durable=False))

    before = wal_frames(store)
    await store.commit(step_commit(run, 2, durable=False))
    assert wal_frames(store) - before == 2

    before = wal_frames(store)
    run.status = RunStatus.SUSPENDED
    await store.commit(step_commit(run, 3, durable=False))
    assert wal_frames(store) - before > 2


async def test_a_transition_of_a_run_the_store_just_wrote_reads_nothing_back(
    store: SqliteStore,
) -> None:
    """A commit compares the indexed columns it writes with those stored, to assign only
    what changed; for a run the store wrote or read at the version the commit expects, it
    knows them and reads no row back: the commit is its UPDATE's compare-and-set alone."""
    run = new_run("r")
    await store.create_run(run, durable=False)
    with statements(store) as seen:
        await store.commit(step_commit(run, 1, durable=False))
    assert not [sql for sql in seen if sql.startswith("SELECT")], seen
    assert any("WHERE run_id = 'r' AND version = 1" in sql for sql in seen), seen

    store._known.clear()  # as after a rolled-back batch: read back, as before
    with statements(store) as seen:
        await store.commit(step_commit(run, 2, durable=False))
    assert [sql for sql in seen if sql.startswith("SELECT")], seen

    stale = copy.copy(run)  # a commit at a version the store has moved past
    stale.version = 2
    with pytest.raises(StoreConflict):
        await store.commit(step_commit(stale, 9, durable=False))
    loaded = await store.load("r")
    assert loaded is not None and loaded.run.version == 3 and ("s9",) not in loaded.steps


async def test_a_commit_after_a_lease_renewal_writes_the_lease_it_carries(
    store: SqliteStore,
) -> None:
    """A renewal moves a run's lease without moving its version, so what the store knew of
    the run's indexed columns no longer holds: the next commit reads them back, and the
    lease it carries is the one stored (were the renewed lease taken for the old one, the
    commit would leave it, as an unchanged column, where the renewal put it)."""
    run = new_run("r")
    run.owner, run.lease_until = "me", 100.0
    await store.create_run(run, durable=False)
    await store.renew_leases("me", ["r"], 200.0)
    await store.commit(step_commit(run, 1, durable=False))  # still carries 100.0
    loaded = await store.load_run("r")
    assert loaded is not None and loaded.lease_until == 100.0


@contextlib.contextmanager
def statements(store: SqliteStore) -> Iterator[list[str]]:
    """The SQL statements the store's writer connection runs meanwhile."""
    seen: list[str] = []
    assert store._writer is not None
    store._writer.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        store._writer.set_trace_callback(None)


def steps_in_a_row(workflow_id: str, count: int, execute: Any) -> Workflow:
    """A workflow of `count` steps, each running `execute`."""
    flow = create_workflow(id=workflow_id)
    for i in range(count):
        flow = flow.then(create_step(id=f"s{i}", execute=execute))
    return flow.commit()


async def test_a_run_moves_its_lease_once_half_of_it_is_gone(store: SqliteStore) -> None:
    """The lease is an indexed column: commits that follow each other quickly leave it
    where it is, and the first commit after half of it has passed extends it, so a run
    that commits holds at least half a lease ahead of it."""
    lease = 1.0
    seen: list[float] = []

    async def look(ctx: StepContext) -> int:
        run = await store.load_run(ctx.run_id)
        assert run is not None and run.lease_until is not None
        seen.append(run.lease_until)
        if len(seen) == 3:
            await asyncio.sleep(lease * 0.6)
        return 0

    engine = Engine(store, [steps_in_a_row("leased", 5, look)], lease_seconds=lease)
    result = await engine.start_run(StartCommand(workflow_id="leased"))
    assert result.status is RunStatus.SUCCESS
    first, second, third, fourth, fifth = seen
    assert first == second == third
    assert fourth >= third + lease * 0.6
    assert fifth == fourth


async def test_a_commit_never_moves_a_lease_the_upkeep_renewed_back(store: SqliteStore) -> None:
    """The upkeep renews the leases of running executions every third of a lease; a commit
    that follows writes the run's lease as the execution holds it, so the renewal must
    reach that copy too, or the commit would shorten the lease it just got."""
    lease = 1.0
    seen: list[float] = []

    async def look(ctx: StepContext) -> int:
        if not seen:
            await asyncio.sleep(lease * 0.45)  # a renewal comes at lease / 3
        run = await store.load_run(ctx.run_id)
        assert run is not None and run.lease_until is not None
        seen.append(run.lease_until)
        return 0

    engine = Engine(store, [steps_in_a_row("renewed", 2, look)], lease_seconds=lease)
    await engine.start()
    try:
        result = await engine.start_run(StartCommand(workflow_id="renewed"))
    finally:
        await engine.close()
    assert result.status is RunStatus.SUCCESS
    renewed, after_commit = seen
    assert after_commit >= renewed


async def test_a_wal_deleted_under_the_server_makes_the_store_refuse_every_call(
    tmp_path: Path,
) -> None:
    """SQLite goes on writing the WAL file it opened; one deleted (and a new one made at
    its path by the next connection) cannot be fsynced by name: every write and read is
    then refused STORE_UNAVAILABLE, so nothing is acknowledged that a crash would lose (it
    was: 12 runs answered OK, then gone after a SIGKILL). What was committed before is
    kept: a clean stop copies it into the database."""
    path = tmp_path / "wal.db"
    store = SqliteStore(str(path))
    await store.setup()
    engine = Engine(store, [steps_in_a_row("kept", 1, _zero)])
    await engine.start()
    kept = await engine.start_run(StartCommand(workflow_id="kept", run_id="before"))
    assert kept.status is RunStatus.SUCCESS
    os.remove(f"{path}-wal")
    for attempt in ("deleted", "replaced"):
        with pytest.raises(StoreUnavailable, match="deleted or replaced"):
            await engine.start_run(StartCommand(workflow_id="kept", run_id=f"after-{attempt}"))
        with pytest.raises(StoreUnavailable, match="deleted or replaced"):
            await store.load_run("before")
        os.close(os.open(f"{path}-wal", os.O_CREAT | os.O_WRONLY))  # as another connection
    await engine.close()
    await store.close()
    reopened = SqliteStore(str(path))
    await reopened.setup()
    try:
        loaded = await reopened.load_run("before")
        assert loaded is not None and loaded.status is RunStatus.SUCCESS
    finally:
        await reopened.close()


async def _zero(ctx: StepContext) -> int:
    return 0


async def test_a_write_lock_another_process_holds_delays_writes_and_nothing_else(
    tmp_path: Path,
) -> None:
    """An operator's `sqlite3` shell holds the write lock (BEGIN IMMEDIATE): writes wait for
    it, up to the store's lock wait, on the loop's timers, so reads go on meanwhile; once it
    is free they are applied, in order; held past the wait they fail STORE_UNAVAILABLE
    "database is locked". SQLite's busy wait held the event loop, and with it every call
    of the server (a GetRun took 15 s), for 5 s per write."""
    path = tmp_path / "locked.db"
    store = SqliteStore(str(path))
    await store.setup()
    store.lock_wait = 1.5
    engine = Engine(store, [steps_in_a_row("kept", 1, _zero)])
    await engine.start()
    holder = sqlite3.connect(path, isolation_level=None, timeout=5, check_same_thread=False)
    try:
        await engine.start_run(StartCommand(workflow_id="kept", run_id="before"))
        holder.execute("BEGIN IMMEDIATE")
        writes = [
            asyncio.ensure_future(engine.start_run(StartCommand(workflow_id="kept", run_id=r)))
            for r in ("first", "second")
        ]
        await asyncio.sleep(0.3)
        started = time.monotonic()
        assert (await store.load_run("before")) is not None
        assert time.monotonic() - started < 0.1  # the loop is free
        assert not any(w.done() for w in writes)
        holder.execute("ROLLBACK")
        done = await asyncio.wait_for(asyncio.gather(*writes), timeout=2)
        assert [d.status for d in done] == [RunStatus.SUCCESS] * 2
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="database is locked"):
            await engine.start_run(StartCommand(workflow_id="kept", run_id="refused"))
        assert 1.4 < time.monotonic() - started < 3
        holder.execute("ROLLBACK")
        await engine.start_run(StartCommand(workflow_id="kept", run_id="after"))
    finally:
        holder.close()
        await engine.close()
        await store.close()


async def _made(path: str) -> None:
    store = SqliteStore(path)
    await store.setup()
    await store.close()


def _setup_as_unprivileged(path: str, answer: Any) -> None:
    """The child's side of the read-only test: drop root (root may write any file), then
    open the store and send back what happened."""
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)  # nobody
    store = SqliteStore(path)
    try:
        asyncio.run(store.setup())
    except Exception as exc:
        answer.send(f"{type(exc).__name__}: {exc}")
    else:
        answer.send("opened")
        asyncio.run(store.close())


def test_a_file_the_server_may_not_write_is_refused_at_setup_naming_it() -> None:
    """SQLite opened it read-only, and the first write at start-up failed with "attempt to
    write a readonly database", naming no file."""
    import multiprocessing
    import shutil
    import tempfile

    directory = tempfile.mkdtemp(prefix="waystation-readonly-")  # not under root's 0700 tmp
    try:
        os.chmod(directory, 0o777)
        path = os.path.join(directory, "runs.db")
        asyncio.run(_made(path))  # migrated, so that opening it writes nothing
        os.chmod(path, 0o444)
        os.chmod(f"{path}-lock", 0o666)  # only the database is read-only
        context = multiprocessing.get_context("fork")
        answer, sent = context.Pipe(duplex=False)
        child = context.Process(target=_setup_as_unprivileged, args=(path, sent))
        child.start()
        said = answer.recv() if answer.poll(60) else "no answer"
        child.join(30)
        assert said.startswith(f"StoreUnavailable: sqlite: {path}: "), said
        assert "may read the file but not write it" in said, said
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_start_up_names_the_database_file_a_relative_url_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """sqlite:///tmp/x.db (three slashes, the form `serve --help` showed) is tmp/x.db under
    the working directory, not /tmp/x.db: the log names the file whole, so that an
    operator sees where the runs went."""
    monkeypatch.chdir(tmp_path)
    caplog.set_level("INFO", logger="waystation.storage")
    store = SqliteStore.from_url("sqlite:///tmp/x.db")
    await store.setup()
    try:
        assert (tmp_path / "tmp" / "x.db").exists()
        named = [r.getMessage() for r in caplog.records if r.name == "waystation.storage"]
        assert f"SQLite database {tmp_path / 'tmp' / 'x.db'}" in named
    finally:
        await store.close()
