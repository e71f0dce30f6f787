"""The SnapshotStore protocol: the whole contract between the engine and a database.

Every method is async. Writes are atomic: a `commit` either applies entirely or not at all.
Error contract:
- `create_run` raises `StoreConflict` when the run id exists.
- `commit` raises `StoreConflict` when the stored version is not `expected_version` (the
  compare-and-set that gives concurrent resumes exactly one winner); nothing is written then.
- Any other failure (disk full, database locked past the busy timeout) raises
  `StoreUnavailable`; nothing is written then either.
Reads never raise for a missing run: they return None (or nothing).

Durability: a write is committed when its call returns, so a process that dies loses none.
A durable write (every one but a `Commit` with `durable=False`) is also on stable storage, so
a power cut loses none; a non-durable one reaches it with the next durable write. Commits
reach the disk in order: after a power cut a store holds a prefix of its commits. A durable
write whose flush fails (an fsync error) raises StoreUnavailable although it is committed:
whether it survives a power cut is then unknown, like a PostgreSQL commit whose connection
broke.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from waystation.engine.model import RunRecord, RunSnapshot, RunStatus, StepRecord


class StoreError(Exception):
    """Base of the errors a store raises."""


class StoreConflict(StoreError):
    """The row exists (create) or its version moved on (commit, delete)."""

    reason = "RUN_CHANGED"

    def __init__(self, message: str, run_id: str = "") -> None:
        super().__init__(message)
        self.run_id = run_id
        self.metadata = {"run_id": run_id} if run_id else {}


class StoreUnavailable(StoreError):
    """The database could not complete the operation; this operation wrote nothing (the
    call it served may have written before it: a run created, a resume claimed)."""

    reason = "STORE_UNAVAILABLE"

    metadata: dict[str, str]
    """Ids for the caller's error details (the run an execution was writing), if known."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.metadata = {}


class SchemaOutOfDate(StoreError):
    """The database's schema is older than this server and migrations are not allowed, or
    newer than this server knows (a rollback past a migration)."""


def check_schema(current: int, known: int, migrate: bool) -> None:
    """SchemaOutOfDate unless a server that knows `known` migrations may serve a database
    at schema version `current` (migrating it, if `migrate`)."""
    if current > known:
        raise SchemaOutOfDate(
            f"schema version {current} is newer than this server's {known}: a newer server"
            " migrated it; serve it with that one (rolling back past a migration is not"
            " supported)"
        )
    if current < known and not migrate:
        raise SchemaOutOfDate(
            f"schema version {current}, this server needs {known}; "
            "run a server with migrations enabled first"
        )


class StoreInUse(StoreError):
    """Another process serves this store, which takes one process (a SQLite file)."""


@dataclass(frozen=True)
class RequestKey:
    """An idempotency key: `scope` names the operation ("start:wf", "resume:run").

    `fingerprint` digests the call's arguments and is stored with the key, so that a
    request id reused with other arguments can be told from a retry. It is not part of the
    key's identity: the key names one call, whatever it asked for."""

    scope: str
    request_id: str
    fingerprint: str = field(default="", compare=False)


@dataclass
class RequestRecord:
    """What a request id led to: the run, and the outcome once the call settled."""

    key: RequestKey
    run_id: str
    outcome: dict[str, Any] | None = None
    fingerprint: str = ""
    """The first call's (`RequestKey.fingerprint`); empty for keys stored before it was."""


@dataclass
class Commit:
    """One transition: the run header as it is now, and the step records it changed."""

    run: RunRecord
    expected_version: int
    steps: Mapping[str, StepRecord] = field(default_factory=dict)
    new_request: RequestKey | None = None
    settled_requests: Mapping[RequestKey, dict[str, Any]] = field(default_factory=dict)
    deleted_prefixes: Sequence[str] = ()
    """Step records to drop before the upserts: each key and every key below it."""
    events: Sequence[dict[str, Any]] = ()
    """Run events to append; each has a `sequence` unique within the run."""
    durable: bool = True
    """On stable storage before `commit` returns. False for a transition that no caller is
    answered after (a step starting or finishing in the middle of a run): it is committed
    (visible, and kept if the process dies) but reaches the disk with the next durable
    commit, which carries every earlier one with it."""


@dataclass(frozen=True)
class Create:
    run: RunRecord
    request: RequestKey | None = None
    events: Sequence[dict[str, Any]] = ()
    durable: bool = True
    steps: Mapping[str, StepRecord] = field(default_factory=dict)
    outcome: dict[str, Any] | None = None
    """The outcome of `request` when the run settles in its first commit (a start whose
    first entry is a sleep): a retry of the request is answered it."""


@dataclass(frozen=True)
class LeaseRenewal:
    owner: str
    run_ids: Sequence[str]
    until: float


@dataclass(frozen=True)
class ExpiredClaim:
    owner: str
    now: float
    until: float
    limit: int


@dataclass(frozen=True)
class Delete:
    run_id: str
    expected_version: int | None = None
    """Delete only the run at this version (else StoreConflict); None: as it is."""


WriteOp = Commit | Create | LeaseRenewal | ExpiredClaim | Delete
"""What a backend's writer applies; concurrent ones share a transaction."""


@dataclass(frozen=True)
class RunFilter:
    workflow_id: str = ""
    statuses: Sequence[RunStatus] = ()
    resource_id: str = ""
    created_after: float | None = None
    created_before: float | None = None
    resource_prefixes: Sequence[str] = ()
    """Only runs whose resource_id starts with one of these (the caller's tenants)."""


@dataclass(frozen=True)
class Cursor:
    """Where a page of ListRuns ended (runs are ordered newest first)."""

    create_time: float
    run_id: str


class EventPage(list[dict[str, Any]]):
    """A page of a run's events, and the size of their stored JSON (`size`, in characters),
    by which a reader picks the next page's length."""

    def __init__(self, events: list[dict[str, Any]], size: int) -> None:
        super().__init__(events)
        self.size = size


class SnapshotStore(Protocol):
    async def setup(self) -> None:
        """Create or migrate the schema; idempotent, safe to call on every start."""

    async def close(self) -> None:
        """Finish pending writes and release the database."""

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
        """Insert a new run at `run.version`, with its request key (and that request's
        outcome, if the run settles at once), first events and first step records.
        StoreConflict if the run or the request key exists. `durable` as in `Commit`."""

    async def commit(self, commit: Commit) -> None:
        """Apply one transition atomically: the header is written with version
        `commit.expected_version + 1` only if the stored version equals `expected_version`;
        step records under `deleted_prefixes` are dropped, the changed ones upserted, the
        events appended, request keys recorded and settled. StoreConflict otherwise.
        Concurrent commits may share one database transaction."""

    async def load(self, run_id: str) -> RunSnapshot | None:
        """The run's header and every step record, or None."""

    async def load_run(self, run_id: str) -> RunRecord | None:
        """The run's header only, or None."""

    async def list_runs(
        self, where: RunFilter, limit: int, after: Cursor | None
    ) -> list[RunRecord]:
        """Headers matching `where`, newest first (create_time, then run_id, descending),
        strictly after `after`, at most `limit`."""

    async def runs_with_status(self, status: RunStatus, limit: int) -> list[str]:
        """Ids of runs in `status` (recovery at start-up), at most `limit`."""

    async def due_runs(self, now: float, limit: int) -> list[str]:
        """Ids of SUSPENDED runs with a suspension that expired by `now`, at most `limit`."""

    async def renew_leases(self, owner: str, run_ids: Sequence[str], until: float) -> list[str]:
        """Extend to `until` the leases that `owner` holds on these runs (the version does
        not change: a lease is not a transition). Returns the ids of the runs renewed: one
        missing is no longer `owner`'s (another replica canceled it or took it over)."""

    async def claim_expired(self, owner: str, now: float, until: float, limit: int) -> list[str]:
        """Take over RUNNING or WAITING runs whose lease ended before `now` (or that have
        none): owner and lease set, version increased by one, so a former owner that still
        runs loses its next compare-and-set. Returns their ids, at most `limit`."""

    async def list_events(
        self, run_id: str, after: int, limit: int, max_chars: int | None = None
    ) -> EventPage:
        """The run's events with a sequence greater than `after`, in order, at most `limit`;
        with `max_chars`, none after the one whose stored JSON brings the page to that many
        characters (bytes, on PostgreSQL), so at least one, however large."""

    async def get_request(self, key: RequestKey) -> RequestRecord | None:
        """What an idempotency key led to, or None."""

    async def delete_run(self, run_id: str, expected_version: int | None = None) -> bool:
        """Delete the run, its steps and its request keys; False if there was none.
        With `expected_version`, StoreConflict if the run has moved past it."""


def conflict(op: Commit | Create | Delete) -> StoreConflict:
    """The StoreConflict for `op`."""
    if isinstance(op, Delete):
        text = f"run {op.run_id!r} is no longer at version {op.expected_version}"
        return StoreConflict(text, op.run_id)
    if isinstance(op, Commit):
        text = f"run {op.run.run_id!r} is no longer at version {op.expected_version}"
    else:
        text = f"run {op.run.run_id!r} or its request id exists"
    return StoreConflict(text, op.run.run_id)
