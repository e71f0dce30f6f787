"""The PostgreSQL backend (asyncpg): one database shared by many server replicas.

The tables mirror the SQLite backend's (`runs`, `steps`, `requests`, `events`). Writes go
through the same group committer: concurrent transitions share one transaction (one WAL
flush), each in its own savepoint. Every run row carries the version that compare-and-set
commits check and the lease of the replica that drives it.

Migrations run once under an advisory lock; `migrate=False` (replicas without DDL rights)
only checks that the schema is current.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from waystation.engine.model import RunRecord, RunSnapshot, RunStatus, StepRecord
from waystation.storage.group_commit import GroupCommitter, Result
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

# Append-only: a migration's position in this list is its version. Never edit or reorder.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        workflow_id TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        status      TEXT NOT NULL,
        version     BIGINT NOT NULL,
        create_time DOUBLE PRECISION NOT NULL,
        update_time DOUBLE PRECISION NOT NULL,
        owner       TEXT NOT NULL DEFAULT '',
        lease_until DOUBLE PRECISION,
        header      TEXT NOT NULL
    );
    CREATE INDEX runs_by_time ON runs (create_time DESC, run_id DESC);
    CREATE INDEX runs_by_workflow ON runs (workflow_id, create_time DESC, run_id DESC);
    CREATE INDEX runs_by_resource ON runs (resource_id, create_time DESC, run_id DESC);
    CREATE INDEX runs_by_status ON runs (status, create_time DESC, run_id DESC);
    CREATE INDEX runs_by_lease ON runs (status, lease_until);
    CREATE TABLE steps (
        run_id TEXT NOT NULL,
        path   TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (run_id, path)
    );
    CREATE TABLE requests (
        scope      TEXT NOT NULL,
        request_id TEXT NOT NULL,
        run_id     TEXT NOT NULL,
        outcome    TEXT,
        PRIMARY KEY (scope, request_id)
    );
    CREATE INDEX requests_by_run ON requests (run_id);
    CREATE TABLE events (
        run_id   TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        event    TEXT NOT NULL,
        PRIMARY KEY (run_id, sequence)
    );
    """,
    """
    ALTER TABLE runs ADD COLUMN due_at DOUBLE PRECISION;
    CREATE INDEX runs_by_due ON runs (status, due_at);
    """,
    # Partial, as in the SQLite store: transitions of runs that are neither driven nor due
    # (most of a big store) no longer move entries in these two indexes.
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

MIGRATION_LOCK = 0x57415953  # pg_advisory_xact_lock key: "WAYS"

_COLUMN_MARKS = ", ".join(f"${i}" for i in range(1, 12))


class PostgresStore:
    """SnapshotStore on a PostgreSQL database shared by many replicas."""

    exclusive = False
    """Other replicas may drive runs: a run is only taken over when its lease expired."""

    def __init__(self, url: str, *, migrate: bool = True, pool_size: int = 10) -> None:
        self._url = url
        self._migrate = migrate
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._committer: GroupCommitter[_Write] = GroupCommitter(self._apply_batch)

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        return cls(url)

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "store is not set up"
        return self._pool

    async def setup(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=self._pool_size)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"postgresql: cannot connect: {exc}") from exc
        async with self.pool.acquire() as conn, conn.transaction():
            # One migrator at a time, across every replica that starts now.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            if self._migrate:
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
            # Check-only replicas may lack DDL rights: no CREATE, not even IF NOT EXISTS.
            exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
            current = (
                await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
                if exists
                else 0
            )
            check_schema(current, len(MIGRATIONS), self._migrate)
            for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
                await conn.execute(script)
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)

    async def close(self) -> None:
        await self._committer.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

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
        await self._committer.submit(encode(create))

    async def commit(self, commit: Commit) -> None:
        await self._committer.submit(encode(commit))

    async def renew_leases(self, owner: str, run_ids: Sequence[str], until: float) -> list[str]:
        if not run_ids:
            return []
        renewed: list[str] = await self._committer.submit(LeaseRenewal(owner, list(run_ids), until))
        return renewed

    async def claim_expired(self, owner: str, now: float, until: float, limit: int) -> list[str]:
        claimed: list[str] = await self._committer.submit(ExpiredClaim(owner, now, until, limit))
        return claimed

    async def _apply_batch(self, ops: list[_Write]) -> list[Result]:
        """Transitions share one transaction, applied in run-id order (stable, so one run's
        transitions keep their order): two replicas' batches then lock rows in the same
        order and cannot deadlock. Lease upkeep runs in transactions of its own. A batch
        that PostgreSQL still aborts (deadlock, serialization) was rolled back whole and is
        retried."""
        results: list[Result] = [(None, None)] * len(ops)
        order = sorted(
            (i for i, op in enumerate(ops) if isinstance(op, Encoded | Delete)),
            key=lambda i: _run_of(ops[i]),
        )
        for attempt in range(3):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    if not any(_durable(ops[i]) for i in order):
                        # Committed now, flushed with the next durable commit (protocol.py).
                        await conn.execute("SET LOCAL synchronous_commit = off")
                    for i in order:
                        results[i] = await self._apply_one(conn, ops[i])
                break
            except _RETRYABLE:
                if attempt == 2:
                    return [(StoreUnavailable("postgresql: contention; retry"), None)] * len(ops)
            except _DOWN as exc:
                return [(StoreUnavailable(f"postgresql: {exc}"), None)] * len(ops)
        for i, op in enumerate(ops):
            if isinstance(op, LeaseRenewal | ExpiredClaim):
                results[i] = await self._apply_lease(op)
        return results

    async def _apply_lease(self, op: LeaseRenewal | ExpiredClaim) -> Result:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                return await self._apply_one(conn, op)
        except _DOWN as exc:
            return StoreUnavailable(f"postgresql: {exc}"), None

    async def _apply_one(self, conn: asyncpg.Connection, op: _Write) -> Result:
        if isinstance(op, Delete):
            status = await conn.execute(
                "DELETE FROM runs WHERE run_id = $1 AND ($2::bigint IS NULL OR version = $2)",
                op.run_id,
                op.expected_version,
            )
            if status != "DELETE 1":  # nothing written
                there = await conn.fetchval("SELECT 1 FROM runs WHERE run_id = $1", op.run_id)
                return (conflict(op) if there else None), False
            for table in ("steps", "requests", "events"):
                await conn.execute(f"DELETE FROM {table} WHERE run_id = $1", op.run_id)
            return None, True
        if isinstance(op, LeaseRenewal):
            # A row locked by a commit in flight is skipped, not lost: it counts as renewed
            # (the commit moves the lease itself when it needs to).
            locked = await conn.fetch(
                "SELECT run_id FROM runs WHERE owner = $1 AND run_id = ANY($2)",
                op.owner,
                list(op.run_ids),
            )
            await conn.execute(
                "UPDATE runs SET lease_until = $1 WHERE run_id IN (SELECT run_id FROM runs"
                " WHERE owner = $2 AND run_id = ANY($3) ORDER BY run_id FOR UPDATE SKIP LOCKED)",
                op.until,
                op.owner,
                list(op.run_ids),
            )
            return None, [row["run_id"] for row in locked]
        if isinstance(op, ExpiredClaim):
            rows = await conn.fetch(
                "UPDATE runs SET owner = $1, lease_until = $2, version = version + 1"
                " WHERE run_id IN (SELECT run_id FROM runs WHERE status IN ('running', 'waiting')"
                " AND (lease_until IS NULL OR lease_until < $3) ORDER BY run_id LIMIT $4"
                " FOR UPDATE SKIP LOCKED) RETURNING run_id",
                op.owner,
                op.until,
                min(op.now, 1e300),
                op.limit,
            )
            return None, [row["run_id"] for row in rows]
        try:
            # A savepoint per operation: one that conflicts leaves no trace.
            async with conn.transaction():
                if not await _apply_encoded(conn, op):
                    raise _Conflict
        except _Conflict:
            return conflict(op.op), None
        return None, None

    async def delete_run(self, run_id: str, expected_version: int | None = None) -> bool:
        deleted: bool = await self._committer.submit(Delete(run_id, expected_version))
        return deleted

    # -- reads ----------------------------------------------------------------------------

    async def _fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        try:
            return list(await self.pool.fetch(sql, *params))
        except _DOWN as exc:
            raise StoreUnavailable(f"postgresql: {exc}") from exc

    async def load_run(self, run_id: str) -> RunRecord | None:
        rows = await self._fetch(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1", run_id)
        return run_from_row(tuple(rows[0])) if rows else None

    async def load(self, run_id: str) -> RunSnapshot | None:
        try:
            async with (
                self.pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                # One snapshot of the database: the header and the steps of one version.
                row = await conn.fetchrow(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1", run_id
                )
                steps = (
                    await conn.fetch("SELECT path, record FROM steps WHERE run_id = $1", run_id)
                    if row
                    else []
                )
        except _DOWN as exc:
            raise StoreUnavailable(f"postgresql: {exc}") from exc
        if row is None:
            return None
        records = {r["path"]: StepRecord.from_json(json.loads(r["record"])) for r in steps}
        return RunSnapshot.from_keys(run_from_row(tuple(row)), records)

    async def list_runs(
        self, where: RunFilter, limit: int, after: Cursor | None
    ) -> list[RunRecord]:
        clauses, params = filter_sql(where, lambda n: f"${n}")
        if after is not None:
            n = len(params)
            clauses.append(
                f"(create_time < ${n + 1} OR (create_time = ${n + 1} AND run_id < ${n + 2}))"
            )
            params += [after.create_time, after.run_id]
        sql = f"SELECT {RUN_COLUMNS} FROM runs"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY create_time DESC, run_id DESC LIMIT ${len(params) + 1}"
        rows = await self._fetch(sql, *params, limit)
        return [run_from_row(tuple(r)) for r in rows]

    async def due_runs(self, now: float, limit: int) -> list[str]:
        rows = await self._fetch(
            "SELECT run_id FROM runs WHERE status IN ('suspended', 'waiting')"
            " AND due_at <= $1 LIMIT $2",
            now,
            limit,
        )
        return [r["run_id"] for r in rows]

    async def runs_with_status(self, status: RunStatus, limit: int) -> list[str]:
        rows = await self._fetch(
            "SELECT run_id FROM runs WHERE status = $1 LIMIT $2", status.value, limit
        )
        return [r["run_id"] for r in rows]

    async def list_events(
        self, run_id: str, after: int, limit: int, max_chars: int | None = None
    ) -> EventPage:
        # The running total of the stored sizes picks the page in the database: an event
        # past `max_chars` never reaches this process.
        rows = await self._fetch(
            "SELECT event FROM ("
            " SELECT sequence, event,"
            " sum(octet_length(event)) OVER (ORDER BY sequence) - octet_length(event) AS before"
            " FROM (SELECT sequence, event FROM events WHERE run_id = $1 AND sequence > $2"
            " ORDER BY sequence LIMIT $3) AS page"
            ") AS sized WHERE $4::bigint IS NULL OR before < $4::bigint ORDER BY sequence",
            run_id,
            after,
            limit,
            max_chars,
        )
        return EventPage([json.loads(r["event"]) for r in rows], sum(len(r["event"]) for r in rows))

    async def get_request(self, key: RequestKey) -> RequestRecord | None:
        rows = await self._fetch(
            "SELECT run_id, outcome, fingerprint FROM requests"
            " WHERE scope = $1 AND request_id = $2",
            key.scope,
            key.request_id,
        )
        if not rows:
            return None
        row = rows[0]
        outcome = json.loads(row["outcome"]) if row["outcome"] else None
        return RequestRecord(key, row["run_id"], outcome, row["fingerprint"])


_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_DOWN = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
"""What the database (or asyncpg's hold on it) failing raises: StoreUnavailable. asyncpg
raises InternalClientError ("cannot switch to state ...") from a connection the server
closed under a query, as when PostgreSQL restarts."""


_Write = Encoded | LeaseRenewal | ExpiredClaim | Delete


def _durable(op: _Write) -> bool:
    return not isinstance(op, Encoded) or op.op.durable


def _run_of(op: _Write) -> str:
    if isinstance(op, Delete | Encoded):
        return op.run_id
    return ""


async def _apply_encoded(conn: asyncpg.Connection, e: Encoded) -> bool:
    r = e.run
    if isinstance(e.op, Create):
        status = await conn.execute(
            f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({_COLUMN_MARKS})"
            " ON CONFLICT (run_id) DO NOTHING",
            *r,
        )
        done = status == "INSERT 0 1"
    else:
        status = await conn.execute(
            "UPDATE runs SET resource_id = $1, status = $2, version = $3, update_time = $4,"
            " owner = $5, lease_until = $6, due_at = $7, header = $8"
            # The same run, made at the same time: a run deleted and made again under its
            # id may reach the version a late writer of the first expects.
            " WHERE run_id = $9 AND version = $10 AND create_time = $11",
            r[2],
            r[3],
            r[4],
            r[6],
            r[7],
            r[8],
            r[9],
            r[10],
            e.run_id,
            e.expected_version,
            r[5],
        )
        done = status == "UPDATE 1"
    if not done:
        return False
    for prefix in e.deleted:
        await conn.execute(
            "DELETE FROM steps WHERE run_id = $1 AND (path = $2 OR (path > $3 AND path < $4))",
            e.run_id,
            prefix,
            prefix + ".",
            prefix + "/",
        )
    if e.steps:
        await conn.executemany(
            "INSERT INTO steps (run_id, path, record) VALUES ($1, $2, $3)"
            " ON CONFLICT (run_id, path) DO UPDATE SET record = excluded.record",
            [(e.run_id, path, record) for path, record in e.steps],
        )
    if e.events:
        await conn.executemany(
            "INSERT INTO events (run_id, sequence, event) VALUES ($1, $2, $3)",
            [(e.run_id, sequence, event) for sequence, event in e.events],
        )
    if e.new_request is not None and not await _insert_request(conn, e.new_request, e.run_id):
        return False
    if e.outcomes:
        await conn.executemany(
            "UPDATE requests SET outcome = $1 WHERE scope = $2 AND request_id = $3", e.outcomes
        )
    return True


class _Conflict(Exception):
    """Rolls back one operation's savepoint."""


async def _insert_request(conn: asyncpg.Connection, key: RequestKey, run_id: str) -> bool:
    status = await conn.execute(
        "INSERT INTO requests (scope, request_id, run_id, fingerprint) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING",
        key.scope,
        key.request_id,
        run_id,
        key.fingerprint,
    )
    return bool(status == "INSERT 0 1")
