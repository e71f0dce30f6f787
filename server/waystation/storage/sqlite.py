"""The SQLite backend: the embedded default, one file, one process.

Tables: `runs` (one row per run: indexed columns plus a JSON header), `steps` (one row per
step path of a run) and `requests` (idempotency keys). A transition updates one `runs` row
and upserts the step rows it changed, so its cost does not depend on how many steps the run
has or how many runs the file holds (every statement is a primary-key or index lookup).

How a write goes (the hot path of every run):
- Writes are applied on the event loop's thread by the writer connection, one transaction
  per batch: every write submitted while the loop was busy joins the batch, and the batch
  waits a few turns more while other callbacks are ready to run (group commit). A write
  submitted while no batch is queued and at most one other callback is ready is applied at
  once, in the caller's turn.
  With `synchronous=NORMAL` a commit is in the WAL (the page cache) when it returns, so a
  process that dies loses nothing; it costs some tens of microseconds, less than handing it
  to a thread would.
- A durable write then waits for an fsync of the WAL file (`WalSync`), made in a thread and
  shared by every durable write committed before it began (a writer alone, with nothing
  else for the loop to do, makes it on the loop: two thread hand-offs cost more). That
  fsync is exactly what `synchronous=FULL` adds to NORMAL in WAL mode, made once per answer
  instead of once per commit; commits reach the disk in order, so a power cut leaves a
  prefix of them.
- The writer never checkpoints (no commit waits for one): `WalSync` copies the WAL into the
  database from a connection of its own, in another thread, once the WAL has grown.
- Point reads (a run, its steps, a request key) run inline on the writer connection too;
  ListRuns and event pages, which may scan, run in a reader connection's thread (WAL lets it
  see every committed transaction while the writer works).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache, partial
from pathlib import Path
from typing import Any, NoReturn

import aiosqlite

from waystation.engine.model import RunRecord, RunSnapshot, RunStatus, StepRecord
from waystation.storage.group_commit import Result, answer
from waystation.storage.protocol import (
    Commit,
    Create,
    Cursor,
    Delete,
    EventPage,
    ExpiredClaim,
    LeaseRenewal,
    RequestKey,
    RequestRecord,
    RunFilter,
    StoreInUse,
    StoreUnavailable,
    check_schema,
    conflict,
)
from waystation.storage.sql import (
    REQUEST_FINGERPRINTS,
    REQUEST_SCOPES_WITH_RESOURCE,
    RUN_COLUMNS,
    Encoded,
    encode,
    filter_sql,
    run_from_row,
)

log = logging.getLogger("waystation.storage")

# Append-only: a migration's position in this list is its version. Never edit or reorder.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        workflow_id TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        status      TEXT NOT NULL,
        version     INTEGER NOT NULL,
        create_time REAL NOT NULL,
        update_time REAL NOT NULL,
        header      TEXT NOT NULL
    );
    CREATE INDEX runs_by_time ON runs (create_time DESC, run_id DESC);
    CREATE INDEX runs_by_workflow ON runs (workflow_id, create_time DESC, run_id DESC);
    CREATE INDEX runs_by_resource ON runs (resource_id, create_time DESC, run_id DESC);
    CREATE INDEX runs_by_status ON runs (status, create_time DESC, run_id DESC);
    CREATE TABLE steps (
        run_id TEXT NOT NULL,
        path   TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (run_id, path)
    ) WITHOUT ROWID;
    CREATE TABLE requests (
        scope      TEXT NOT NULL,
        request_id TEXT NOT NULL,
        run_id     TEXT NOT NULL,
        outcome    TEXT,
        PRIMARY KEY (scope, request_id)
    ) WITHOUT ROWID;
    CREATE INDEX requests_by_run ON requests (run_id);
    """,
    """
    CREATE TABLE events (
        run_id   TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        event    TEXT NOT NULL,
        PRIMARY KEY (run_id, sequence)
    ) WITHOUT ROWID;
    """,
    """
    ALTER TABLE runs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE runs ADD COLUMN lease_until REAL;
    CREATE INDEX runs_by_lease ON runs (status, lease_until);
    """,
    """
    ALTER TABLE runs ADD COLUMN due_at REAL;
    CREATE INDEX runs_by_due ON runs (status, due_at);
    """,
    # Partial: a transition of a run that is neither driven nor due (most of a big store is
    # suspended runs waiting for a person) no longer moves entries in these two indexes,
    # which at a million runs meant reading and rewriting cold pages on every commit.
    """
    DROP INDEX runs_by_lease;
    CREATE INDEX runs_by_lease ON runs (status, lease_until)
        WHERE status IN ('running', 'waiting');
    DROP INDEX runs_by_due;
    CREATE INDEX runs_by_due ON runs (status, due_at) WHERE due_at IS NOT NULL;
    """,
    REQUEST_SCOPES_WITH_RESOURCE,
    REQUEST_FINGERPRINTS,
]

PRAGMAS = [
    # WAL: readers do not block the writer and the writer does not block readers.
    "PRAGMA journal_mode=WAL",
    # NORMAL: a commit is written to the WAL but not fsynced; durable writes fsync the WAL
    # before they return (WalSync), as FULL would after every commit.
    "PRAGMA synchronous=NORMAL",
    # Wait for a lock held by another connection instead of failing at once.
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=OFF",
]

WRITER_PRAGMAS = [
    # The writer never checkpoints, so no commit waits for one; WalSync checkpoints.
    "PRAGMA wal_autocheckpoint=0",
    # A WAL that grew in a burst is cut back to this size when it restarts.
    "PRAGMA journal_size_limit=67108864",
]

CHECKPOINT_BYTES = 16 * 1024 * 1024
"""WalSync checkpoints once the WAL file is larger than this, and lets the WAL restart once
it holds this much... (a cycle of the bench appends about 200 KB, mostly new copies of the
same few pages at the end of each table: a checkpoint copies each page once, so a larger WAL
means fewer checkpoints and fewer pages copied per commit; 16 MB measured better than 4 and
64)"""
CHECKPOINT_EVERY = 64
"""...which it looks at after this many write batches."""
GATHER_TURNS = 16
"""A batch waits at most this many turns of a busy event loop for more writes."""
GIVE_WAY_EVERY = 0.005
"""Writers applied at once give the loop a turn at least this often (seconds)."""
LOCK_WAIT = 5.0
"""How long writes wait for a write lock another process holds (an operator's `sqlite3`
shell in a transaction) before they fail STORE_UNAVAILABLE "database is locked". The
writer's own busy timeout is a few milliseconds: the wait is on the loop's timers, so reads
and every other call go on meanwhile (SQLite's busy wait blocked the whole server)."""
BUSY_SLICE_MS = 10


class Locked(StoreUnavailable):
    """Another connection holds the database's write lock: nothing was written."""


def _check_writable(path: str) -> None:
    """SQLite opens a file this process may not write read-only, and the first write at
    start-up failed with "attempt to write a readonly database", naming no file."""
    if path != ":memory:" and os.path.exists(path) and not os.access(path, os.W_OK):
        raise sqlite3.OperationalError(
            f"this process (user id {os.geteuid()}) may read the file but not write it"
        )


def path_from_url(url: str) -> str:
    """`sqlite:///relative.db` or `sqlite:////abs/path.db`: a file (an in-memory database
    would keep nothing, and each of the store's connections would have its own)."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite://") :]
    path = rest[1:] if rest.startswith("/") else rest
    if path in ("", ":memory:") or path.endswith("/"):
        raise ValueError(
            f"{url!r} names no file: give one, as sqlite:///waystation.db (relative) or"
            " sqlite:////var/lib/waystation/runs.db (absolute)"
        )
    return path


class WalSync:
    """Durability and checkpoints for one database file, off the event loop.

    `sync()` returns once every transaction committed before it was called is on stable
    storage: an fsync of the WAL file in a thread, shared by all the callers that arrived
    while the previous fsync ran (or, for a caller alone, on the loop). `checkpoint()`
    copies the WAL into the database (PASSIVE: it never blocks the writer) in a thread of
    its own, so a checkpoint never delays an fsync."""

    def __init__(self, db_path: str) -> None:
        self._db_path = db_path
        self._wal = db_path + "-wal"
        self._fsyncs = ThreadPoolExecutor(1, thread_name_prefix="sqlite-fsync")
        self._checkpoints = ThreadPoolExecutor(1, thread_name_prefix="sqlite-checkpoint")
        self._running: asyncio.Future[None] | None = None
        """The fsync in flight: it may have begun before a caller's commit."""
        self._next: asyncio.Future[None] | None = None
        """The fsync that callers arriving now share; it begins when the running one ends."""
        self._checkpointer: sqlite3.Connection | None = None
        self._page_size = 4096
        self._checkpointing: asyncio.Future[bool] | None = None
        self.fsyncs = 0
        """fsyncs made so far (how many durable writes shared each is what group sync buys)."""
        self.checkpoints = 0
        """Checkpoints made so far (in the checkpoint thread)."""
        self.finishes = 0
        """Checkpoints finished on the loop so far (each lets the WAL restart)."""
        self._identity: tuple[int, int] | None = None
        self.broken = ""
        """Why nothing this process commits can be made durable any more (the WAL file it
        writes was deleted or replaced), or "". The store then refuses every call."""

    def watch(self) -> None:
        """Remember which file the WAL is (device and inode): SQLite goes on writing the
        file it opened, so a WAL deleted or replaced under it cannot be fsynced by name."""
        st = os.stat(self._wal)
        self._identity = (st.st_dev, st.st_ino)

    async def sync(self) -> None:
        if self._running is None and not _others_ready(asyncio.get_running_loop()):
            # Alone: the fsync right here costs less than the two thread hand-offs around
            # it, and the loop has nothing else to run meanwhile.
            assert self._next is None  # a caller that queues one also starts it
            try:
                self._fsync()
            except Exception as exc:
                raise StoreUnavailable(f"sqlite: fsync of the WAL failed: {exc}") from exc
            return
        waiter = self._next
        if waiter is None:
            waiter = self._next = asyncio.get_running_loop().create_future()
            if self._running is None:
                self._start()
        # Shared with other callers: one that stops waiting must not cancel it.
        await asyncio.shield(waiter)

    def _start(self) -> None:
        waiter, self._next = self._next, None
        assert waiter is not None
        self._running = waiter
        loop = asyncio.get_running_loop()

        def done(job: Future[None]) -> None:  # in the fsync thread
            loop.call_soon_threadsafe(self._synced, waiter, job.exception())

        # Straight to the executor, not run_in_executor: no asyncio future chained to it.
        self._fsyncs.submit(self._fsync).add_done_callback(done)

    def _synced(self, waiter: asyncio.Future[None], error: BaseException | None) -> None:
        self._running = None
        if waiter.done():
            pass
        elif error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(StoreUnavailable(f"sqlite: fsync of the WAL failed: {error}"))
        if self._next is not None:
            self._start()

    def _fsync(self) -> None:
        if self.broken:
            raise OSError(self.broken)
        try:
            fd = os.open(self._wal, os.O_RDONLY)
        except FileNotFoundError:
            self._lost()
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != self._identity:
                self._lost()
            os.fsync(fd)
        finally:
            os.close(fd)
        self.fsyncs += 1

    def _lost(self) -> NoReturn:
        self.broken = (
            f"the WAL file {self._wal} was deleted or replaced while this server ran, so what"
            " it commits cannot be made durable: stop the server (a clean stop copies what it"
            " committed into the database) and start it again"
        )
        raise OSError(self.broken)

    def checkpoint(self, finish: Callable[[], None]) -> None:
        """Checkpoint if the WAL has grown and no checkpoint is running: the bulk of the
        copy in a thread (PASSIVE, so the writer goes on), then `finish()` on the event
        loop, which copies the few frames committed meanwhile. Only a checkpoint that no
        commit raced lets the next commit restart the WAL from its beginning; without that
        step, a WAL written to without pause would grow for ever."""
        if self._checkpointing is None or self._checkpointing.done():
            loop = asyncio.get_running_loop()
            self._checkpointing = loop.run_in_executor(self._checkpoints, self._checkpoint)
            self._checkpointing.add_done_callback(partial(_finish_checkpoint, finish))

    def _checkpoint(self) -> bool:
        """Copy the WAL into the database; True if it holds CHECKPOINT_BYTES of frames or
        more, so that it is time to finish on the loop and let the WAL restart. The file's
        size only says how far the WAL once reached: a WAL that restarts is overwritten
        from its beginning, not truncated, so most checkpoints find it holding far less."""
        with contextlib.suppress(FileNotFoundError):
            if os.path.getsize(self._wal) < CHECKPOINT_BYTES:
                return False
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(
                self._db_path, isolation_level=None, check_same_thread=False
            )
            (self._page_size,) = self._checkpointer.execute("PRAGMA page_size").fetchone()
        _, frames, _ = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        return bool(frames * self._page_size >= CHECKPOINT_BYTES)

    async def close(self) -> None:
        while (pending := self._running or self._next) is not None:
            await asyncio.wait([pending])
        if self._checkpointing is not None:
            await asyncio.wait([self._checkpointing])
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._fsyncs.shutdown()
        self._checkpoints.shutdown()


def _finish_checkpoint(finish: Callable[[], None], job: asyncio.Future[bool]) -> None:
    try:
        if job.result():
            finish()
    except (OSError, sqlite3.Error) as exc:
        log.warning("sqlite checkpoint failed: %s", exc)


def _fsync_path(path: str) -> None:
    """fsync the file or directory at `path`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory_of(path: str) -> None:
    """Make the directory entries of the database and its WAL durable (once, at setup)."""
    _fsync_path(os.path.dirname(os.path.abspath(path)))


class SqliteStore:
    """SnapshotStore on one SQLite file."""

    exclusive = True
    """One process serves a SQLite file: at start-up, every RUNNING run is an orphan."""

    def __init__(self, path: str, *, migrate: bool = True) -> None:
        # Its real path: SQLite follows a symbolic link to name the WAL and the lock.
        self._path = os.path.realpath(path) if path not in ("", ":memory:") else path
        self._migrate = migrate
        self._lock: int | None = None
        """A descriptor of the `-lock` file beside the database, locked while this store is
        open: a second process on the same file (a second `make run`) fails at start-up
        instead of taking over runs the first one drives."""
        self._writer: sqlite3.Connection | None = None
        """Writes and point reads, on the event loop's thread."""
        self._reader: aiosqlite.Connection | None = None
        """Reads that may scan, in their own thread."""
        on_disk = path not in ("", ":memory:")
        self._wal = WalSync(self._path) if on_disk else None
        self._queue: list[tuple[_Write, asyncio.Future[Any]]] = []
        self._flushing = False
        self._gathered = 0
        """Turns of the loop the next batch has waited for more writes."""
        self._gave_way = 0.0
        """When (loop time) a writer applied at once last gave the loop a turn."""
        self._batches = 0
        self._known = KnownRuns()
        self.lock_wait = LOCK_WAIT
        self._locked_since: float | None = None
        """Loop time since when writes find the write lock held by another process."""

    @classmethod
    def from_url(cls, url: str, *, migrate: bool = True) -> SqliteStore:
        return cls(path_from_url(url), migrate=migrate)

    async def setup(self) -> None:
        if self._wal is not None:
            # Named whole: sqlite:///tmp/x.db is tmp/x.db under the working directory.
            log.info("SQLite database %s", self._path)
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            self._lock = _lock(self._path)
            with contextlib.suppress(FileNotFoundError):
                if (links := os.stat(self._path).st_nlink) > 1:
                    log.warning(
                        "%s has %d hard links: a server started through another of them"
                        " would not be stopped by this one's lock",
                        self._path,
                        links,
                    )
        writer = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            _check_writable(self._path)
            for pragma in PRAGMAS + WRITER_PRAGMAS:
                writer.execute(pragma)
            _migrate(writer, self._migrate)  # waits for a lock at start-up: nothing to serve
            writer.execute(f"PRAGMA busy_timeout={BUSY_SLICE_MS}")
        except BaseException as exc:
            writer.close()
            self._unlock()
            if isinstance(exc, sqlite3.Error):  # locked by another program, not a database
                raise StoreUnavailable(f"sqlite: {self._path}: {exc}") from exc
            raise
        self._writer = writer
        if self._wal is not None:
            _fsync_directory_of(self._path)
            self._wal.watch()
        self._reader = await aiosqlite.connect(self._path, isolation_level=None)
        await self._reader.execute("PRAGMA busy_timeout=5000")

    async def close(self) -> None:
        if self._queue:  # the flush that writes them is already scheduled
            await asyncio.wait([future for _, future in self._queue])
        if self._wal is not None:
            await self._wal.close()
        if self._reader is not None:
            await self._reader.close()
        if self._writer is not None:
            # The last connection to close checkpoints the WAL into the database: a thread.
            await asyncio.to_thread(self._writer.close)
        self._reader = self._writer = None
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the lock
            self._lock = None

    # -- writes ---------------------------------------------------------------------------

    async def create_run(
        self,
        run: RunRecord,
        request: RequestKey | None = None,
        events: Sequence[dict[str, Any]] = (),
        *,
        durable: bool = True,
        steps: Mapping[str, StepRecord] | None = None,
        outcome: dict[str, Any] | None = None,
    ) -> None:
        create = Create(run, request, events, durable, steps or {}, outcome)
        await self._write(encode(create), durable=durable)

    async def commit(self, commit: Commit) -> None:
        await self._write(encode(commit), durable=commit.durable)

    async def renew_leases(self, owner: str, run_ids: Sequence[str], until: float) -> list[str]:
        if not run_ids:
            return []
        renewed: list[str] = await self._write(
            LeaseRenewal(owner, list(run_ids), until), durable=False
        )
        return renewed

    async def claim_expired(self, owner: str, now: float, until: float, limit: int) -> list[str]:
        claimed: list[str] = await self._write(ExpiredClaim(owner, now, until, limit))
        return claimed

    async def delete_run(self, run_id: str, expected_version: int | None = None) -> bool:
        deleted: bool = await self._write(Delete(run_id, expected_version))
        return deleted

    async def _write(self, op: _Write, durable: bool = True) -> Any:
        """Apply `op` now if the writer is alone, else queue it for the next batch; return
        once it is committed (and, if `durable`, on disk) with its value, or raise its error.
        A caller that stops waiting does not stop its write."""
        loop = asyncio.get_running_loop()
        self._check_durable()
        if self._queue or _others_ready(loop):
            future: asyncio.Future[Any] = loop.create_future()
            self._queue.append((op, future))
            if not self._flushing:
                self._flushing = True
                loop.call_soon(self._flush)
            value = await future
        else:  # alone: a batch of one, now, rather than two turns of the loop later
            ((error, value),) = self._apply([op])
            if isinstance(error, Locked) and self._wait_for_lock(loop):
                future = loop.create_future()
                self._queue.append((op, future))
                error, value = None, await future
            if error is not None:
                raise error
            # A run whose steps never await would otherwise keep the loop until it ends:
            # every other call, and a checkpoint's completion, would wait.
            if (now := loop.time()) - self._gave_way >= GIVE_WAY_EVERY:
                self._gave_way = now
                await asyncio.sleep(0)
        if durable and self._wal is not None:
            await self._wal.sync()
        return value

    def _flush(self) -> None:
        """One transaction for everything queued since the last batch. While other
        callbacks are ready to run (the tasks that are about to submit the next writes), the
        batch waits for them, at most GATHER_TURNS turns of the loop: one caller alone waits
        for nothing, many share a transaction."""
        loop = asyncio.get_running_loop()
        if self._gathered < GATHER_TURNS and _others_ready(loop):
            self._gathered += 1
            loop.call_soon(self._flush)
            return
        self._gathered = 0
        batch, self._queue = self._queue, []
        self._flushing = False
        results = self._apply([op for op, _ in batch])
        if isinstance(results[0][0], Locked) and self._wait_for_lock(loop):
            self._queue[:0] = batch  # first, in their order, when the lock is free
            return
        answer(batch, results)

    def _wait_for_lock(self, loop: asyncio.AbstractEventLoop) -> bool:
        """After a batch found the write lock held: whether to try again shortly (a flush
        is then scheduled) rather than fail, until `lock_wait` has passed."""
        now = loop.time()
        if self._locked_since is None:
            self._locked_since = now
        if now - self._locked_since >= self.lock_wait:
            self._locked_since = None
            return False
        if not self._flushing:
            self._flushing = True
            loop.call_later(min(0.1, 0.01 + (now - self._locked_since) / 4), self._flush)
        return True

    def _apply(self, ops: list[_Write]) -> list[Result]:
        """One transaction for `ops`, and a checkpoint every so often."""
        assert self._writer is not None, "store is not set up"
        try:
            results = _apply_batch(self._writer, ops, self._known)
        except Exception as exc:
            results = [(StoreUnavailable(f"sqlite: {exc}"), None)] * len(ops)
        if not isinstance(results[0][0], Locked):
            self._locked_since = None
        self._batches += 1
        if self._wal is not None and self._batches % CHECKPOINT_EVERY == 0:
            self._wal.checkpoint(self._finish_checkpoint)
        return results

    def _finish_checkpoint(self) -> None:
        """On the loop, between two batches: copy what was committed while the checkpoint
        thread worked (a few frames, and the fsyncs of the WAL and the database)."""
        if self._writer is not None:
            self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            if self._wal is not None:
                self._wal.finishes += 1

    # -- reads ----------------------------------------------------------------------------

    def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(writer, *args)` inline: a point read takes microseconds."""
        assert self._writer is not None, "store is not set up"
        self._check_durable()
        try:
            return fn(self._writer, *args)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    def _check_durable(self) -> None:
        """StoreUnavailable once commits can no longer be made durable: an answer read from
        the store then (a replayed request id, say) could tell of a transition that a crash
        would lose."""
        if self._wal is not None and self._wal.broken:
            raise StoreUnavailable(f"sqlite: {self._wal.broken}")

    async def _scan(
        self, sql: str, params: Sequence[Any] = (), fetch: Callable[..., list[Any]] | None = None
    ) -> list[Any]:
        """Run a read that may scan in the reader's thread (`fetch` reads its rows: all of
        them by default)."""
        db = self._reader
        assert db is not None, "store is not set up"
        self._check_durable()
        try:
            # aiosqlite (pinned) runs a function in its connection's thread with `_execute`:
            # one hand-off for the whole read.
            rows: list[Any] = await db._execute(  # type: ignore[no-untyped-call]
                fetch or _fetchall, db._conn, sql, params
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc
        return rows

    async def load_run(self, run_id: str) -> RunRecord | None:
        rows = self._read(_fetchall, f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        self._known.remember(rows[0])
        return run_from_row(rows[0])

    async def load(self, run_id: str) -> RunSnapshot | None:
        found, rows = self._read(_load, run_id)
        if not found:
            return None
        self._known.remember(found[0])
        run = run_from_row(found[0])
        steps = {path: StepRecord.from_json(json.loads(rec)) for path, rec in rows}
        return RunSnapshot.from_keys(run, steps)

    async def list_runs(
        self, where: RunFilter, limit: int, after: Cursor | None
    ) -> list[RunRecord]:
        clauses, params = filter_sql(where, lambda _: "?")
        if after is not None:
            clauses.append("(create_time < ? OR (create_time = ? AND run_id < ?))")
            params += [after.create_time, after.create_time, after.run_id]
        sql = f"SELECT {RUN_COLUMNS} FROM runs"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY create_time DESC, run_id DESC LIMIT ?"
        rows = await self._scan(sql, [*params, limit])
        return [run_from_row(r) for r in rows]

    async def due_runs(self, now: float, limit: int) -> list[str]:
        rows = self._read(
            _fetchall,
            "SELECT run_id FROM runs WHERE status IN ('suspended', 'waiting')"
            " AND due_at <= ? LIMIT ?",
            (now, limit),
        )
        return [r[0] for r in rows]

    async def runs_with_status(self, status: RunStatus, limit: int) -> list[str]:
        rows = self._read(
            _fetchall, "SELECT run_id FROM runs WHERE status = ? LIMIT ?", (status.value, limit)
        )
        return [r[0] for r in rows]

    async def list_events(
        self, run_id: str, after: int, limit: int, max_chars: int | None = None
    ) -> EventPage:
        rows = await self._scan(
            "SELECT event FROM events WHERE run_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
            (run_id, after, limit),
            partial(_fetch_within, max_chars=max_chars),
        )
        return EventPage([json.loads(r[0]) for r in rows], sum(len(r[0]) for r in rows))

    async def get_request(self, key: RequestKey) -> RequestRecord | None:
        rows = self._read(
            _fetchall,
            "SELECT run_id, outcome, fingerprint FROM requests WHERE scope = ? AND request_id = ?",
            (key.scope, key.request_id),
        )
        if not rows:
            return None
        run_id, outcome, fingerprint = rows[0]
        return RequestRecord(key, run_id, json.loads(outcome) if outcome else None, fingerprint)


def _others_ready(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether other callbacks wait for their turn: tasks at work, some of them about to
    write. One alone does not count: it is usually the completion of the task that started
    the writer (a shield's callback), and a sequential caller would wait for it on every
    step. CPython's event loop keeps them in `_ready`; on a loop without it (uvloop) a
    batch never waits and a writer is always alone."""
    return len(getattr(loop, "_ready", ())) > 1


def _lock(path: str) -> int:
    """A descriptor holding a POSIX lock on `path`-lock; StoreInUse if another process holds
    it. The lock is on a file of its own: closing any descriptor of the database file would
    drop SQLite's own locks on it. POSIX locks belong to the process, so a store opened again
    in the process that holds one (a test reading what a crashed store left) is let in."""
    fd = os.open(f"{path}-lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreInUse(f"another process serves {path} (a SQLite file takes one)") from None
    return fd


def _migrate(db: sqlite3.Connection, migrate: bool = True) -> None:
    # BEGIN IMMEDIATE takes the write lock first, so two processes starting on one file
    # apply each migration once.
    db.execute("BEGIN IMMEDIATE")
    try:
        exists = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        row = db.execute("SELECT max(version) FROM schema_version").fetchone() if exists else None
        current = row[0] if row and row[0] is not None else 0
        check_schema(current, len(MIGRATIONS), migrate)
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            for statement in filter(str.strip, script.split(";")):
                db.execute(statement)
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite ended it itself on some errors (a full disk)
            db.execute("ROLLBACK")
        raise


_Write = Encoded | LeaseRenewal | ExpiredClaim | Delete


def _apply_batch(db: sqlite3.Connection, ops: list[_Write], known: KnownRuns) -> list[Result]:
    """On the writer connection: one transaction for the whole batch, a savepoint per
    operation, so one that conflicts leaves no trace and the others still commit."""
    try:
        # IMMEDIATE: take the write lock now rather than fail to upgrade a read lock later.
        db.execute("BEGIN IMMEDIATE")
        results = [_apply_one(db, op, known) for op in ops]
        db.execute("COMMIT")
    except BaseException as exc:
        known.clear()  # it may hold what was rolled back
        if db.in_transaction:
            db.execute("ROLLBACK")
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:
            return [(Locked(f"sqlite: {exc}"), None)] * len(ops)
        if isinstance(exc, sqlite3.Error):
            return [(StoreUnavailable(f"sqlite: {exc}"), None)] * len(ops)
        raise
    return results


def _apply_one(db: sqlite3.Connection, op: _Write, known: KnownRuns) -> Result:
    if isinstance(op, LeaseRenewal):
        marks = ", ".join("?" for _ in op.run_ids)
        rows = db.execute(
            f"UPDATE runs SET lease_until = ? WHERE owner = ? AND run_id IN ({marks})"
            " RETURNING run_id",
            (op.until, op.owner, *op.run_ids),
        ).fetchall()
        known.forget(op.run_ids)
        return None, [row[0] for row in rows]
    if isinstance(op, ExpiredClaim):
        rows = db.execute(
            "UPDATE runs SET owner = ?, lease_until = ?, version = version + 1"
            " WHERE run_id IN (SELECT run_id FROM runs WHERE status IN ('running', 'waiting')"
            " AND (lease_until IS NULL OR lease_until < ?) LIMIT ?) RETURNING run_id",
            (op.owner, op.until, op.now, op.limit),
        ).fetchall()
        claimed = [row[0] for row in rows]
        known.forget(claimed)
        return None, claimed
    if isinstance(op, Delete):
        if op.expected_version is None:
            deleted = db.execute("DELETE FROM runs WHERE run_id = ?", (op.run_id,)).rowcount
        else:
            deleted = db.execute(
                "DELETE FROM runs WHERE run_id = ? AND version = ?",
                (op.run_id, op.expected_version),
            ).rowcount
        if not deleted:  # nothing written
            there = db.execute("SELECT 1 FROM runs WHERE run_id = ?", (op.run_id,)).fetchone()
            return (conflict(op) if there else None), False
        for table in ("steps", "requests", "events"):
            db.execute(f"DELETE FROM {table} WHERE run_id = ?", (op.run_id,))
        known.forget([op.run_id])
        return None, True
    # A savepoint only where a conflict can follow a write (a request id already taken):
    # an op that fails its first statement has written nothing.
    if op.new_request is None:
        ok = _apply_encoded(db, op, known)
    else:
        db.execute("SAVEPOINT op")
        ok = _apply_encoded(db, op, known)
        if not ok:
            db.execute("ROLLBACK TO op")
        db.execute("RELEASE op")
    if ok:
        known.remember(op.run)
    return (None if ok else conflict(op.op)), None


def _apply_encoded(db: sqlite3.Connection, e: Encoded, known: KnownRuns) -> bool:
    r = e.run
    if isinstance(e.op, Create):
        marks = ", ".join("?" for _ in r)
        cur = db.execute(f"INSERT OR IGNORE INTO runs ({RUN_COLUMNS}) VALUES ({marks})", r)
        if cur.rowcount != 1:
            return False
    elif not _update_run(db, e, known):
        return False
    for prefix in e.deleted:
        # Every key below `prefix`: "prefix.x..." sorts between "prefix." and "prefix/".
        db.execute(
            "DELETE FROM steps WHERE run_id = ? AND (path = ? OR (path > ? AND path < ?))",
            (e.run_id, prefix, prefix + ".", prefix + "/"),
        )
    db.executemany(
        "INSERT INTO steps (run_id, path, record) VALUES (?, ?, ?)"
        " ON CONFLICT (run_id, path) DO UPDATE SET record = excluded.record",
        [(e.run_id, path, record) for path, record in e.steps],
    )
    db.executemany(
        "INSERT INTO events (run_id, sequence, event) VALUES (?, ?, ?)",
        [(e.run_id, sequence, event) for sequence, event in e.events],
    )
    if e.new_request is not None:
        inserted = db.execute(
            "INSERT OR IGNORE INTO requests (scope, request_id, run_id, fingerprint)"
            " VALUES (?, ?, ?, ?)",
            (e.new_request.scope, e.new_request.request_id, e.run_id, e.new_request.fingerprint),
        ).rowcount
        if inserted != 1:
            return False
    if e.outcomes:
        db.executemany(
            "UPDATE requests SET outcome = ? WHERE scope = ? AND request_id = ?", e.outcomes
        )
    return True


# The columns of `runs` that indexes hold and a transition may change. SQLite rewrites an
# index entry whenever its column is assigned, even to the value it holds, and most
# transitions change none of them: assigning only those that changed writes one page of
# `runs` instead of five (a smaller WAL, a shorter fsync). The other columns a transition
# may change are always assigned.
_PLACE = {name: i for i, name in enumerate(RUN_COLUMNS.split(", "))}
_INDEXED = tuple(
    (name, _PLACE[name]) for name in ("resource_id", "status", "lease_until", "due_at")
)
_ALWAYS = tuple((name, _PLACE[name]) for name in ("version", "update_time", "owner", "header"))
_CREATED = _PLACE["create_time"]
_READ_INDEXED = (
    f"SELECT {', '.join(name for name, _ in _INDEXED)} FROM runs"
    " WHERE run_id = ? AND version = ? AND create_time = ?"
)


def _update_run(db: sqlite3.Connection, e: Encoded, known: KnownRuns) -> bool:
    """Compare-and-set the run's row from `expected_version`; False if it is not there. The
    row must also be the same run, made at the same time: a run deleted and made again
    under its id may reach the version a late writer of the first expects."""
    r = e.run
    stored = known.indexed(e.run_id, e.expected_version)
    if stored is None:
        stored = db.execute(_READ_INDEXED, (e.run_id, e.expected_version, r[_CREATED])).fetchone()
        if stored is None:
            return False
    changed = tuple(
        (name, i) for (name, i), old in zip(_INDEXED, stored, strict=True) if r[i] != old
    )
    assigned = changed + _ALWAYS
    cur = db.execute(
        _update_sql(tuple(name for name, _ in assigned)),
        (*(r[i] for _, i in assigned), e.run_id, e.expected_version, r[_CREATED]),
    )
    return cur.rowcount == 1


@cache
def _update_sql(columns: tuple[str, ...]) -> str:
    assign = ", ".join(f"{name} = ?" for name in columns)
    return f"UPDATE runs SET {assign} WHERE run_id = ? AND version = ? AND create_time = ?"


class KnownRuns:
    """The indexed columns of the runs this store wrote or read last, at their version,
    so that a transition that finds its run here at the version it expects need not read
    them back (one statement in six of a commit). One process writes the file, so an
    entry holds until its run is written again; the writes that change a run without
    moving its version (lease renewals), takeovers and deletes drop theirs, and a batch
    rolled back drops them all. Settled runs are not kept; at most KNOWN_RUNS are."""

    def __init__(self) -> None:
        self._runs: dict[str, tuple[int, tuple[Any, ...]]] = {}

    def indexed(self, run_id: str, version: int) -> tuple[Any, ...] | None:
        entry = self._runs.get(run_id)
        return entry[1] if entry is not None and entry[0] == version else None

    def remember(self, row: Sequence[Any]) -> None:
        """Remember a row as written (or read): the values of RUN_COLUMNS."""
        run_id = row[_RUN_ID]
        if row[_STATUS] in _SETTLED:
            self._runs.pop(run_id, None)
            return
        self._runs[run_id] = (row[_VERSION], tuple(row[i] for _, i in _INDEXED))
        if len(self._runs) > KNOWN_RUNS:
            del self._runs[next(iter(self._runs))]  # the oldest entry

    def forget(self, run_ids: Sequence[str]) -> None:
        for run_id in run_ids:
            self._runs.pop(run_id, None)

    def clear(self) -> None:
        self._runs.clear()


_RUN_ID, _STATUS, _VERSION = _PLACE["run_id"], _PLACE["status"], _PLACE["version"]
_SETTLED = frozenset(s.value for s in RunStatus if s.is_final)
KNOWN_RUNS = 4096


def _fetchall(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    return db.execute(sql, params).fetchall()


def _fetch_within(
    db: sqlite3.Connection, sql: str, params: Sequence[Any], max_chars: int | None
) -> list[Any]:
    """The rows of a query whose first column is text, up to the one that brings their
    text to `max_chars` characters: the rest are never read."""
    if max_chars is None:
        return _fetchall(db, sql, params)
    rows, size = [], 0
    for row in db.execute(sql, params):
        rows.append(row)
        size += len(row[0])
        if size >= max_chars:
            break
    return rows


def _load(db: sqlite3.Connection, run_id: str) -> tuple[list[Any], list[Any]]:
    """The header and the steps, of the same version: on the writer connection, between
    two of its batches (this process is the only writer), so no transaction is needed."""
    found = db.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchall()
    if not found:
        return found, []
    return found, db.execute(
        "SELECT path, record FROM steps WHERE run_id = ?", (run_id,)
    ).fetchall()
