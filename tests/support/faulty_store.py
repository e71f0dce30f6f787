"""A SnapshotStore around a real SqliteStore that injects storage faults on demand.

    store = FaultyStore(SqliteStore(path))
    running = await create_server(settings, store=store)
    store.fail_writes(when=touches_step("gate", StepStatus.RUNNING))  # the next claim fails
    store.delay_writes(1.5)                                          # a slow fsync
    store.delay_answers(1.5, when=settles(RunStatus.SUSPENDED))      # ... after the commit
    await store.fill_disk()          # real SQLite: "database or disk is full"
    async with store.locked():       # another connection holds the write lock
        ...

The faults follow the protocol's error contract (storage/protocol.py): a failed write raises
StoreUnavailable and writes nothing. The full disk and the locked database are SQLite's own
behaviour (`PRAGMA max_page_count` on the writer; a second connection in `BEGIN IMMEDIATE`
beyond the writer's busy timeout), so the error and its message come from the real backend.
Injected failures and delays hit `commit` and `create_run` (the transitions), and slow
answers `get_request`; every other method (reads, lease upkeep, deletes, whatever the
protocol gains) goes straight to the wrapped store. The full disk and the lock hit every
write, as they would in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from waystation.engine.model import RunStatus, StepStatus
from waystation.storage.protocol import Commit, Create, RequestKey, StoreUnavailable
from waystation.storage.sqlite import SqliteStore

Write = Commit | Create
Predicate = Callable[[Write], bool]

INJECTED = "injected fault: the database did not commit the transaction"


def any_write(op: Write) -> bool:
    return True


def is_create(op: Write) -> bool:
    """The insert of a new run (StartRun, with its first step's RUNNING record; CreateRun)."""
    return isinstance(op, Create)


def touches_step(step: str, status: StepStatus | None = None) -> Predicate:
    """A commit that writes the record of `step` (in `status`, when given). A resume's claim
    is the commit that writes the resumed step RUNNING; a start's insert writes its first
    step RUNNING."""

    def matches(op: Write) -> bool:
        record = op.steps.get(step)
        return record is not None and (status is None or record.status is status)

    return matches


def settles(status: RunStatus) -> Predicate:
    """A commit that leaves the run in `status`."""
    return lambda op: isinstance(op, Commit) and op.run.status is status


@dataclass
class _Fault:
    when: Predicate
    remaining: int  # how many more writes it hits; -1: until cleared
    error: str = ""  # raise StoreUnavailable(error) instead of writing
    delay: float = 0.0  # write after this many seconds
    answer_after: float = 0.0  # write at once, answer the writer this many seconds later

    def hits(self, op: Write) -> bool:
        if self.remaining == 0 or not self.when(op):
            return False
        if self.remaining > 0:
            self.remaining -= 1
        return True


class FaultyStore:
    """SnapshotStore: a real SqliteStore, and faults switched on and off by a test."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.faults: list[_Fault] = []
        self.injected: list[Write] = []
        """The writes that an injected failure refused, in order."""
        self.delayed: list[Write] = []
        self._landing: set[asyncio.Task[None]] = set()
        self.slow_request_reads: list[float] = []

    def __getattr__(self, name: str) -> Any:
        # Only called for what this class does not define: the reads, setup, close, ...
        return getattr(self.inner, name)

    # -- switching faults -----------------------------------------------------------------

    def fail_writes(
        self, count: int = 1, when: Predicate = any_write, message: str = INJECTED
    ) -> None:
        """The next `count` matching commits or inserts raise StoreUnavailable (-1: all of
        them until `clear`) and write nothing."""
        self.faults.append(_Fault(when, count, error=message))

    def delay_writes(self, seconds: float, count: int = -1, when: Predicate = any_write) -> None:
        """A slow fsync: matching writes land `seconds` later. As with the real group
        committer, a caller that stops waiting does not stop its write."""
        self.faults.append(_Fault(when, count, delay=seconds))

    def delay_answers(self, seconds: float, count: int = -1, when: Predicate = any_write) -> None:
        """A slow fsync after the commit: matching writes are applied at once (visible to
        every read) and their writers answered `seconds` later, as the group committer
        answers a batch only once its fsync returns."""
        self.faults.append(_Fault(when, count, answer_after=seconds))

    def delay_request_reads(self, seconds: float, count: int = 1) -> None:
        """A slow network to the database: the next `count` lookups of a request id read
        at once and are answered `seconds` later, so their caller goes on with what was
        stored before a write that landed meanwhile (PostgreSQL replicas see this)."""
        self.slow_request_reads += [seconds] * count

    async def get_request(self, key: RequestKey) -> Any:
        found = await self.inner.get_request(key)
        if self.slow_request_reads:
            await asyncio.sleep(self.slow_request_reads.pop(0))
        return found

    def clear(self) -> None:
        """Remove the injected failures and delays (not the full disk or a held lock)."""
        self.faults.clear()

    async def fill_disk(self) -> None:
        """From now on the database file cannot grow: SQLite answers a write that needs a
        new page with SQLITE_FULL, "database or disk is full" (writes that fit in the pages
        the file already has still succeed, as on a real full disk)."""
        pages = await self._pragma("page_count")
        await self._pragma(f"max_page_count = {pages}")

    async def free_disk(self) -> None:
        await self._pragma("max_page_count = 1073741823")

    @contextlib.asynccontextmanager
    async def locked(self, busy_timeout: float = 0.2) -> AsyncIterator[None]:
        """Another connection holds the database's write lock (BEGIN IMMEDIATE) until the
        block ends; the store's writes wait `busy_timeout` seconds for it (its real lock
        wait, shortened so tests stay quick) and then fail with "database is locked"."""
        before, self.inner.lock_wait = self.inner.lock_wait, busy_timeout
        # In a thread: taking the lock may wait for the writer's transaction to end, and
        # that transaction needs this event loop to get there.
        holder = await asyncio.to_thread(self._take_write_lock)
        try:
            yield
        finally:
            await asyncio.to_thread(_release, holder)
            self.inner.lock_wait = before

    def _take_write_lock(self) -> sqlite3.Connection:
        holder = sqlite3.connect(
            self.inner._path, isolation_level=None, timeout=5, check_same_thread=False
        )
        holder.execute("BEGIN IMMEDIATE")
        return holder

    async def _pragma(self, text: str) -> Any:
        writer = self.inner._writer  # the connection the store writes with
        assert writer is not None, "store is not set up"
        row = writer.execute(f"PRAGMA {text}").fetchone()
        return row[0] if row else None

    # -- the writes -----------------------------------------------------------------------

    async def create_run(
        self,
        run: Any,
        request: RequestKey | None = None,
        events: Sequence[Any] = (),
        *,
        durable: bool = True,
        steps: Mapping[str, Any] | None = None,
        outcome: dict[str, Any] | None = None,
    ) -> None:
        await self._write(
            Create(run, request, events, durable, steps or {}, outcome),
            lambda: self.inner.create_run(
                run, request, events, durable=durable, steps=steps, outcome=outcome
            ),
        )

    async def commit(self, commit: Commit) -> None:
        await self._write(commit, lambda: self.inner.commit(commit))

    async def _write(self, op: Write, apply: Callable[[], Any]) -> None:
        for fault in list(self.faults):
            if not fault.hits(op):
                continue
            if fault.error:
                self.injected.append(op)
                raise StoreUnavailable(fault.error)
            if fault.answer_after:
                await apply()
                await asyncio.sleep(fault.answer_after)
                return
            self.delayed.append(op)
            landing = asyncio.create_task(self._later(fault.delay, apply))
            self._landing.add(landing)
            landing.add_done_callback(self._landing.discard)
            await asyncio.shield(landing)
            return
        await apply()

    @staticmethod
    async def _later(delay: float, apply: Callable[[], Any]) -> None:
        await asyncio.sleep(delay)
        await apply()


def _release(holder: sqlite3.Connection) -> None:
    holder.execute("ROLLBACK")
    holder.close()
