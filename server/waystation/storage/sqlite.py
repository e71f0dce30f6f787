"""The SQLite backend (aiosqlite): the embedded default, one file, one process.

Tables: `runs` (one row per run: indexed columns plus a JSON header), `steps` (one row per
step path of a run) and `requests` (idempotency keys). A transition updates one `runs` row
and upserts the step rows it changed, so its cost does not depend on how many steps the run
has or how many runs the file holds (every statement is a primary-key or index lookup).

Two connections: one writer, used only by the group committer, and one reader. WAL lets the
reader see every committed transaction while the writer works.
"""

from __future__ import annotations

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
    StoreUnavailable,
    conflict_text,
)
from waystation.storage.sql import RUN_COLUMNS, Encoded, encode, filter_sql, run_from_row

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
        self._committer: GroupCommitter[_Write] = GroupCommitter(self._apply_batch)

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
    # Each batch runs in the writer's thread in one call (one hand-off, not one per
    # statement); values are encoded on the event loop when the write is submitted.

    async def create_run(
        self,
        run: RunRecord,
        request: RequestKey | None = None,
        events: Sequence[dict[str, Any]] = (),
    ) -> None:
        await self._committer.submit(encode(Create(run, request, events)))

    async def commit(self, commit: Commit) -> None:
        await self._committer.submit(encode(commit))

    async def renew_leases(self, owner: str, run_ids: Sequence[str], until: float) -> None:
        if run_ids:
            await self._committer.submit(LeaseRenewal(owner, list(run_ids), until))

    async def claim_expired(self, owner: str, now: float, until: float, limit: int) -> list[str]:
        claimed: list[str] = await self._committer.submit(ExpiredClaim(owner, now, until, limit))
        return claimed

    async def delete_run(self, run_id: str) -> bool:
        deleted: bool = await self._committer.submit(Delete(run_id))
        return deleted

    async def _apply_batch(self, ops: list[_Write]) -> list[Result]:
        db = self._writer
        assert db is not None, "store is not set up"
        # aiosqlite (pinned) runs a function in its connection's thread with `_execute`:
        # the whole batch is one hand-off instead of one per statement.
        results: list[Result] = await db._execute(  # type: ignore[no-untyped-call]
            _apply_batch, db._conn, ops
        )
        return results

    # -- reads ----------------------------------------------------------------------------

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        rows: list[Any] = await self._in_reader(_fetchall, sql, params)
        return rows

    async def _in_reader(self, fn: Any, *args: Any) -> Any:
        """Run `fn(connection, *args)` in the reader's thread: one hand-off per read, and a
        read's statements never interleave with another read's."""
        db = self._reader
        assert db is not None, "store is not set up"
        try:
            return await db._execute(fn, db._conn, *args)  # type: ignore[no-untyped-call]
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    async def load_run(self, run_id: str) -> RunRecord | None:
        rows = await self._fetchall(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        return run_from_row(rows[0]) if rows else None

    async def load(self, run_id: str) -> RunSnapshot | None:
        found, rows = await self._in_reader(_load, run_id)
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


_Write = Encoded | LeaseRenewal | ExpiredClaim | Delete


def _apply_batch(db: sqlite3.Connection, ops: list[_Write]) -> list[Result]:
    """In the writer's thread: one transaction for the whole batch, a savepoint per
    operation, so one that conflicts leaves no trace and the others still commit."""
    try:
        # IMMEDIATE: take the write lock now rather than fail to upgrade a read lock later.
        db.execute("BEGIN IMMEDIATE")
        results = [_apply_one(db, op) for op in ops]
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        return [(StoreUnavailable(f"sqlite: {exc}"), None)] * len(ops)
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return results


def _apply_one(db: sqlite3.Connection, op: _Write) -> Result:
    if isinstance(op, LeaseRenewal):
        marks = ", ".join("?" for _ in op.run_ids)
        db.execute(
            f"UPDATE runs SET lease_until = ? WHERE owner = ? AND run_id IN ({marks})",
            (op.until, op.owner, *op.run_ids),
        )
        return None, None
    if isinstance(op, ExpiredClaim):
        rows = db.execute(
            "UPDATE runs SET owner = ?, lease_until = ?, version = version + 1"
            " WHERE run_id IN (SELECT run_id FROM runs WHERE status IN ('running', 'waiting')"
            " AND (lease_until IS NULL OR lease_until < ?) LIMIT ?) RETURNING run_id",
            (op.owner, op.until, op.now, op.limit),
        ).fetchall()
        return None, [row[0] for row in rows]
    if isinstance(op, Delete):
        deleted = db.execute("DELETE FROM runs WHERE run_id = ?", (op.run_id,)).rowcount
        for table in ("steps", "requests", "events"):
            db.execute(f"DELETE FROM {table} WHERE run_id = ?", (op.run_id,))
        return None, deleted == 1
    db.execute("SAVEPOINT op")
    ok = _apply_encoded(db, op)
    if not ok:
        db.execute("ROLLBACK TO op")
    db.execute("RELEASE op")
    return (None if ok else StoreConflict(conflict_text(op.op))), None


def _apply_encoded(db: sqlite3.Connection, e: Encoded) -> bool:
    r = e.run
    if isinstance(e.op, Create):
        marks = ", ".join("?" for _ in r)
        cur = db.execute(f"INSERT OR IGNORE INTO runs ({RUN_COLUMNS}) VALUES ({marks})", r)
    else:
        cur = db.execute(
            "UPDATE runs SET resource_id = ?, status = ?, version = ?, update_time = ?,"
            " owner = ?, lease_until = ?, due_at = ?, header = ?"
            " WHERE run_id = ? AND version = ?",
            (r[2], r[3], r[4], r[6], r[7], r[8], r[9], r[10], e.run_id, e.expected_version),
        )
    if cur.rowcount != 1:
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
            "INSERT OR IGNORE INTO requests (scope, request_id, run_id) VALUES (?, ?, ?)",
            (e.new_request.scope, e.new_request.request_id, e.run_id),
        ).rowcount
        if inserted != 1:
            return False
    db.executemany("UPDATE requests SET outcome = ? WHERE scope = ? AND request_id = ?", e.outcomes)
    return True


def _fetchall(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    return db.execute(sql, params).fetchall()


def _load(db: sqlite3.Connection, run_id: str) -> tuple[list[Any], list[Any]]:
    """The header and the steps in one read transaction: of the same version."""
    db.execute("BEGIN")
    try:
        found = db.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchall()
        rows = (
            db.execute("SELECT path, record FROM steps WHERE run_id = ?", (run_id,)).fetchall()
            if found
            else []
        )
    finally:
        db.execute("COMMIT")
    return found, rows
