"""The SQLite store's reads under concurrent and cancelled reads.

Both were found by the crash suite, when every read ran on one reader connection and `load`
held a read transaction (BEGIN ... COMMIT) open across two SELECTs:

- another read arriving meanwhile was answered from that older snapshot (seed 20240817: a
  ResumeRun sent 2 ms after its StartRun was acknowledged got NOT_FOUND);
- a `load` cancelled while its BEGIN was in flight (the caller's deadline passed) left the
  transaction open for good: every later `load` failed "cannot start a transaction within a
  transaction" (INTERNAL to the caller; seed 7) and every other read saw a frozen snapshot.

Now point reads (`load`, `load_run`, `get_request`) run inline on the writer connection, in
one synchronous call that no other read or write can interleave with and no cancellation can
cut; reads that may scan (`list_runs`, `list_events`) run as one function each in the
reader connection's thread. The tests force the old interleavings against both paths: a
scan paused inside its read transaction, and reads cancelled before and during their work.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from waystation.engine.model import RunRecord, RunStatus
from waystation.storage import SqliteStore
from waystation.storage.protocol import RunFilter

STEPS_QUERY = "SELECT path, record FROM steps"


class _PausingReader:
    """The store's reader connection. The store runs each scan as one function in the
    connection's thread (`_execute`); the first one here first opens a read transaction of
    its own and pauses inside it until `resume` is set, as a scan that holds its snapshot
    across a slow moment would."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.paused = threading.Event()
        self.resume = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def _execute(self, fn: Any, *args: Any) -> Any:
        if self.paused.is_set():
            return self.real._execute(fn, *args)

        def paused(conn: Any, *rest: Any) -> Any:
            conn.execute("BEGIN")
            conn.execute(STEPS_QUERY).fetchall()  # the snapshot is taken
            self.paused.set()
            self.resume.wait(5)
            conn.execute("COMMIT")
            return fn(conn, *rest)

        return self.real._execute(paused, *args)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(str(tmp_path / "reads.db"))
    await opened.setup()
    try:
        yield opened
    finally:
        await opened.close()


def _run(run_id: str) -> RunRecord:
    return RunRecord(run_id, "wf", status=RunStatus.SUSPENDED, version=1)


def _pause_scans(store: SqliteStore) -> _PausingReader:
    reader = _PausingReader(store._reader)
    store._reader = reader  # type: ignore[assignment]
    return reader


async def test_a_committed_run_is_found_while_a_scan_holds_its_read_transaction(
    store: SqliteStore,
) -> None:
    """A run created (committed) while a `list_runs` is inside its read transaction is
    found right after by `load_run` and `load`, without waiting for the scan: a read never
    answers from another call's snapshot, so what a caller was told is committed is visible
    to its next call. The next scan sees it too."""
    await store.create_run(_run("old"))
    reader = _pause_scans(store)
    scanning = asyncio.create_task(store.list_runs(RunFilter(), 10, None))
    assert await asyncio.to_thread(reader.paused.wait, 5)  # the snapshot is taken

    await store.create_run(_run("new"))  # committed: StartRun would acknowledge it now
    found = await asyncio.wait_for(store.load_run("new"), timeout=1)
    snapshot = await asyncio.wait_for(store.load("new"), timeout=1)
    assert not scanning.done(), "the point reads did not overlap the scan"
    reader.resume.set()
    assert found is not None, "load_run answered from another read's older snapshot"
    assert snapshot is not None and snapshot.run.run_id == "new"
    # The paused scan's own SELECT runs after its pause, in a fresh transaction.
    assert {r.run_id for r in await scanning} == {"old", "new"}
    assert {r.run_id for r in await store.list_runs(RunFilter(), 10, None)} == {"old", "new"}


@pytest.mark.parametrize("turns", [0, 1, 3], ids=["before-it-runs", "one-turn", "three-turns"])
async def test_a_cancelled_load_leaves_the_store_usable_and_fresh(
    store: SqliteStore, turns: int
) -> None:
    """A load whose caller is cancelled (a gRPC deadline) at any point leaves no transaction
    open: a run committed afterwards is found, and the next load reads its own snapshot."""
    await store.create_run(_run("first"))
    loading = asyncio.create_task(store.load("first"))
    for _ in range(turns):
        await asyncio.sleep(0)
    loading.cancel()
    with contextlib.suppress(asyncio.CancelledError):  # else it had already answered
        await loading

    assert store._writer is not None and not store._writer.in_transaction
    await store.create_run(_run("second"))
    found = await store.load_run("second")
    assert found is not None, "reads are served from a transaction the cancelled load left open"
    snapshot = await store.load("second")  # raised "cannot start a transaction within ..."
    assert snapshot is not None and snapshot.run.run_id == "second"


async def test_a_scan_cancelled_in_flight_leaves_the_reader_usable_and_fresh(
    store: SqliteStore,
) -> None:
    """A `list_runs` whose caller is cancelled while its function runs in the reader's thread
    (paused inside its read transaction) still ends that transaction: the next scan sees
    what was committed meanwhile."""
    await store.create_run(_run("first"))
    reader = _pause_scans(store)
    scanning = asyncio.create_task(store.list_runs(RunFilter(), 10, None))
    assert await asyncio.to_thread(reader.paused.wait, 5)
    scanning.cancel()
    await store.create_run(_run("second"))
    reader.resume.set()
    with pytest.raises(asyncio.CancelledError):
        await scanning
    assert {r.run_id for r in await store.list_runs(RunFilter(), 10, None)} == {"first", "second"}
