"""The SQLite backend (aiosqlite): the embedded default, one file, one process.

Tables: `runs` (one row per run: indexed columns plus a JSON header), `steps` (one row per
step path of a run) and `requests` (idempotency keys). A transition updates one `runs` row
and upserts the step rows it changed, so its cost does not depend on how many steps the run
has or how many runs the file holds (every statement is a primary-key or index lookup).

Two connections: one writer, used only by the group committer, and one reader. WAL lets the
reader see every committed transaction while the writer works.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from waystation.engine.model import RunRecord, RunSnapshot, RunStatus, StepRecord
from waystation.storage.group_commit import GroupCommitter, Result
from waystation.storage.protocol import (
    Commit,
    Create,
    Cursor,
    Delete,
    ExpiredClaim,
    LeaseRenewal,
    RequestKey,
    RequestRecord,
    RunFilter,
    StoreConflict,
    StoreError,
    StoreUnavailable,
    WriteOp,
    conflict_text,
)
from waystation.storage.sql import RUN_COLUMNS, dumps, filter_sql, run_from_row, run_row

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
]

PRAGMAS = [
    # WAL: readers do not block the writer and the writer does not block readers.
    "PRAGMA journal_mode=WAL",
    # FULL: a commit is on disk (WAL fsynced) before it is acknowledged, as DESIGN.md §4
    # promises; NORMAL could lose the last transactions on power loss.
    "PRAGMA synchronous=FULL",
    # Wait for a lock held by another connection instead of failing at once.
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=OFF",
]


def path_from_url(url: str) -> str:
    """`sqlite:///relative.db`, `sqlite:////abs/path.db` or `sqlite://:memory:`."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite://") :]
    return rest[1:] if rest.startswith("/") else rest


class SqliteStore:
    """SnapshotStore on one SQLite file."""

    exclusive = True
    """One process serves a SQLite file: at start-up, every RUNNING run is an orphan."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._read_lock = asyncio.Lock()
        self._committer: GroupCommitter[WriteOp] = GroupCommitter(self._apply_batch)

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        return cls(path_from_url(url))

    async def setup(self) -> None:
        if self._path not in ("", ":memory:"):
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = await aiosqlite.connect(self._path, isolation_level=None)
        for pragma in PRAGMAS:
            await self._writer.execute(pragma)
        await self._migrate(self._writer)
        self._reader = await aiosqlite.connect(self._path, isolation_level=None)
        await self._reader.execute("PRAGMA busy_timeout=5000")

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        # BEGIN IMMEDIATE takes the write lock first, so two processes starting on one file
        # apply each migration once.
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
            async with db.execute("SELECT max(version) FROM schema_version") as cur:
                row = await cur.fetchone()
            current = row[0] if row and row[0] is not None else 0
            for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in filter(str.strip, script.split(";")):
                    await db.execute(statement)
                await db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        await self._committer.close()
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    # -- writes ---------------------------------------------------------------------------

    async def create_run(
        self,
        run: RunRecord,
        request: RequestKey | None = None,
        events: Sequence[dict[str, Any]] = (),
    ) -> None:
        await self._committer.submit(Create(run, request, events))

    async def commit(self, commit: Commit) -> None:
        await self._committer.submit(commit)

    async def renew_leases(self, owner: str, run_ids: Sequence[str], until: float) -> None:
        if run_ids:
            await self._committer.submit(LeaseRenewal(owner, list(run_ids), until))

    async def claim_expired(self, owner: str, now: float, until: float, limit: int) -> list[str]:
        claimed: list[str] = await self._committer.submit(ExpiredClaim(owner, now, until, limit))
        return claimed

    async def _apply_batch(self, ops: list[WriteOp]) -> list[Result]:
        db = self._writer
        assert db is not None, "store is not set up"
        results: list[Result] = []
        try:
            # IMMEDIATE: take the write lock now rather than fail to upgrade a read lock later.
            await db.execute("BEGIN IMMEDIATE")
            for op in ops:
                results.append(await self._apply_one(db, op))
            await db.execute("COMMIT")
        except sqlite3.Error as exc:
            await self._rollback(db)
            return [(StoreUnavailable(f"sqlite: {exc}"), None)] * len(ops)
        except BaseException:
            await self._rollback(db)
            raise
        return results

    async def _apply_one(self, db: aiosqlite.Connection, op: WriteOp) -> Result:
        """One operation in its own savepoint: one that conflicts or cannot be encoded leaves
        no trace, and the others in the same transaction still commit."""
        if isinstance(op, LeaseRenewal | ExpiredClaim):
            return None, await self._apply_lease(db, op)
        if isinstance(op, Delete):
            return None, await self._apply_delete(db, op)
        await db.execute("SAVEPOINT op")
        try:
            if isinstance(op, Commit):
                ok = await self._apply_commit(db, op)
            else:
                ok = await self._apply_create(db, op)
        except (ValueError, TypeError) as exc:  # a value JSON cannot hold
            await db.execute("ROLLBACK TO op")
            await db.execute("RELEASE op")
            return StoreError(f"cannot store the run: {exc}"), None
        if not ok:
            await db.execute("ROLLBACK TO op")
        await db.execute("RELEASE op")
        return (None if ok else StoreConflict(conflict_text(op))), None

    @staticmethod
    async def _apply_lease(
        db: aiosqlite.Connection, op: LeaseRenewal | ExpiredClaim
    ) -> list[str] | None:
        if isinstance(op, LeaseRenewal):
            marks = ", ".join("?" for _ in op.run_ids)
            await db.execute(
                f"UPDATE runs SET lease_until = ? WHERE owner = ? AND run_id IN ({marks})",
                (op.until, op.owner, *op.run_ids),
            )
            return None
        async with db.execute(
            "UPDATE runs SET owner = ?, lease_until = ?, version = version + 1"
            " WHERE run_id IN (SELECT run_id FROM runs WHERE status IN ('running', 'waiting')"
            " AND (lease_until IS NULL OR lease_until < ?) LIMIT ?) RETURNING run_id",
            (op.owner, op.until, op.now, op.limit),
        ) as cur:
            return [row[0] for row in await cur.fetchall()]

    @staticmethod
    async def _rollback(db: aiosqlite.Connection) -> None:
        if db.in_transaction:
            await db.execute("ROLLBACK")

    async def _apply_create(self, db: aiosqlite.Connection, op: Create) -> bool:
        run = op.run
        cur = await db.execute(
            f"INSERT OR IGNORE INTO runs ({RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            run_row(run),
        )
        if cur.rowcount != 1:
            return False
        await self._insert_events(db, run.run_id, op.events)
        return op.request is None or await self._insert_request(db, op.request, run.run_id)

    @staticmethod
    async def _insert_events(
        db: aiosqlite.Connection, run_id: str, events: Sequence[dict[str, Any]]
    ) -> None:
        if events:
            await db.executemany(
                "INSERT INTO events (run_id, sequence, event) VALUES (?, ?, ?)",
                [(run_id, e["sequence"], dumps(e)) for e in events],
            )

    async def _apply_commit(self, db: aiosqlite.Connection, c: Commit) -> bool:
        run = c.run
        cur = await db.execute(
            "UPDATE runs SET status = ?, version = ?, update_time = ?, owner = ?,"
            " lease_until = ?, due_at = ?, header = ? WHERE run_id = ? AND version = ?",
            (
                run.status.value,
                c.expected_version + 1,
                run.update_time,
                run.owner,
                run.lease_until,
                run.due_at,
                dumps(run.header_json()),
                run.run_id,
                c.expected_version,
            ),
        )
        if cur.rowcount != 1:
            return False
        for prefix in c.deleted_prefixes:
            # Every key below `prefix`: "prefix.x..." sorts between "prefix." and "prefix/".
            await db.execute(
                "DELETE FROM steps WHERE run_id = ? AND (path = ? OR (path > ? AND path < ?))",
                (run.run_id, prefix, prefix + ".", prefix + "/"),
            )
        if c.steps:
            await db.executemany(
                "INSERT INTO steps (run_id, path, record) VALUES (?, ?, ?)"
                " ON CONFLICT (run_id, path) DO UPDATE SET record = excluded.record",
                [(run.run_id, key, dumps(rec.to_json())) for key, rec in c.steps.items()],
            )
        await self._insert_events(db, run.run_id, c.events)
        if c.new_request is not None and not await self._insert_request(
            db, c.new_request, run.run_id
        ):
            return False
        for key, outcome in c.settled_requests.items():
            await db.execute(
                "UPDATE requests SET outcome = ? WHERE scope = ? AND request_id = ?",
                (dumps(outcome), key.scope, key.request_id),
            )
        return True

    @staticmethod
    async def _insert_request(db: aiosqlite.Connection, key: RequestKey, run_id: str) -> bool:
        cur = await db.execute(
            "INSERT OR IGNORE INTO requests (scope, request_id, run_id) VALUES (?, ?, ?)",
            (key.scope, key.request_id, run_id),
        )
        return cur.rowcount == 1

    async def delete_run(self, run_id: str) -> bool:
        deleted: bool = await self._committer.submit(Delete(run_id))
        return deleted

    @staticmethod
    async def _apply_delete(db: aiosqlite.Connection, op: Delete) -> bool:
        cur = await db.execute("DELETE FROM runs WHERE run_id = ?", (op.run_id,))
        for table in ("steps", "requests", "events"):
            await db.execute(f"DELETE FROM {table} WHERE run_id = ?", (op.run_id,))
        return bool(cur.rowcount == 1)

    # -- reads ----------------------------------------------------------------------------

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        # Every read takes the lock: a read must never run inside another's transaction
        # on the one reader connection (it would see that transaction's older snapshot).
        async with self._read_lock:
            return await self._query(sql, params)

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        db = self._reader
        assert db is not None, "store is not set up"
        try:
            async with db.execute(sql, params) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    async def load_run(self, run_id: str) -> RunRecord | None:
        rows = await self._fetchall(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        return run_from_row(rows[0]) if rows else None

    async def load(self, run_id: str) -> RunSnapshot | None:
        # Shielded: a caller cancelled half-way (a deadline) must not leave the reader
        # inside its transaction.
        return await asyncio.shield(self._load(run_id))

    async def _load(self, run_id: str) -> RunSnapshot | None:
        db = self._reader
        assert db is not None, "store is not set up"
        # One read transaction, so the header and the steps are of the same version.
        async with self._read_lock:
            await db.execute("BEGIN")
            try:
                found = await self._query(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
                )
                rows = (
                    await self._query("SELECT path, record FROM steps WHERE run_id = ?", (run_id,))
                    if found
                    else []
                )
            finally:
                await db.execute("COMMIT")
        if not found:
            return None
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
        rows = await self._fetchall(sql, [*params, limit])
        return [run_from_row(r) for r in rows]

    async def due_runs(self, now: float, limit: int) -> list[str]:
        rows = await self._fetchall(
            "SELECT run_id FROM runs WHERE status = 'suspended' AND due_at <= ? LIMIT ?",
            (now, limit),
        )
        return [r[0] for r in rows]

    async def runs_with_status(self, status: RunStatus, limit: int) -> list[str]:
        rows = await self._fetchall(
            "SELECT run_id FROM runs WHERE status = ? LIMIT ?", (status.value, limit)
        )
        return [r[0] for r in rows]

    async def list_events(self, run_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        rows = await self._fetchall(
            "SELECT event FROM events WHERE run_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
            (run_id, after, limit),
        )
        return [json.loads(r[0]) for r in rows]

    async def get_request(self, key: RequestKey) -> RequestRecord | None:
        rows = await self._fetchall(
            "SELECT run_id, outcome FROM requests WHERE scope = ? AND request_id = ?",
            (key.scope, key.request_id),
        )
        if not rows:
            return None
        run_id, outcome = rows[0]
        return RequestRecord(key, run_id, json.loads(outcome) if outcome else None)
