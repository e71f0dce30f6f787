"""The SQLite store's reader connection under concurrent and cancelled reads.

Both were found by the crash suite. SqliteStore reads on one reader connection; `load`
holds a read transaction (BEGIN ... COMMIT) open across two SELECTs:

- the other reads (`load_run`, `get_request`, `list_runs`, ...) run on the same connection
  without waiting for that transaction, so a read arriving meanwhile is answered from its
  older snapshot (seed 20240817: a ResumeRun sent 2 ms after its StartRun was acknowledged
  got NOT_FOUND);
- a `load` cancelled while its BEGIN is in flight (the caller's deadline passed) leaves the
  transaction open for good: every later `load` fails "cannot start a transaction within a
  transaction" (INTERNAL to the caller; seed 7) and every other read is served from a frozen
  snapshot.

The interleavings are forced here (a load paused inside its transaction; a load cancelled at
its BEGIN), so each test fails every time the bug is there. Since then each read runs as one
function in the reader's thread (its transaction cannot interleave with another read, nor be
cut by a cancelled caller); the pause is injected at that level.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from waystation.engine.model import RunRecord, RunStatus
from waystation.storage import SqliteStore

STEPS_QUERY = "SELECT path, record FROM steps"


class _PausingReader:
    """The store's reader connection. The store runs each read as one function in the
    connection's thread (`_execute`); the first `load` here first opens a read transaction
    of its own and pauses inside it until `resume` is set, as a load that holds its
    snapshot across a slow moment would."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.paused = threading.Event()
        self.resume = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def _execute(self, fn: Any, *args: Any) -> Any:
        if getattr(fn, "__name__", "") != "_load" or self.paused.is_set():
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


async def test_a_committed_run_is_found_while_another_load_holds_its_read_transaction(
    store: SqliteStore,
) -> None:
    """A run created (committed) while a `load` of another run is inside its read
    transaction is found by `load_run` right after: a reader never answers from another
    call's snapshot, so what a caller was told is committed is visible to its next call."""
    await store.create_run(_run("old"))
    reader = _PausingReader(store._reader)
    store._reader = reader  # type: ignore[assignment]
    loading = asyncio.create_task(store.load("old"))
    assert await asyncio.to_thread(reader.paused.wait, 5)  # the snapshot is taken

    await store.create_run(_run("new"))  # committed: StartRun would acknowledge it now
    reading = asyncio.create_task(store.load_run("new"))
    # A correct store makes this read wait for the load (or read outside its snapshot);
    # give it time to answer wrongly from inside the open transaction.
    await asyncio.wait([reading], timeout=0.3)
    reader.resume.set()
    found = await asyncio.wait_for(reading, timeout=5)
    assert (await loading) is not None
    assert found is not None, "load_run answered from another load's older snapshot"
    assert found.run_id == "new"


async def test_a_load_cancelled_at_its_begin_leaves_the_reader_usable_and_fresh(
    store: SqliteStore,
) -> None:
    """A load whose caller is cancelled while its BEGIN is in flight (a gRPC deadline)
    does not leave the reader inside a transaction: a run committed afterwards is found,
    and the next load can begin its own transaction."""
    await store.create_run(_run("first"))
    loading = asyncio.create_task(store.load("first"))
    await asyncio.sleep(0)  # one turn: the load is now waiting for its BEGIN
    loading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loading

    assert await store.load_run("first") is not None
    await store.create_run(_run("second"))
    found = await store.load_run("second")
    assert found is not None, "reads are served from a transaction the cancelled load left open"
    snapshot = await store.load("second")  # raised "cannot start a transaction within ..."
    assert snapshot is not None and snapshot.run.run_id == "second"
