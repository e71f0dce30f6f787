"""What the SQL backends share: the run row's columns, JSON encoding and the ListRuns filter.

Dialect differences (placeholders, upserts, locking) stay in each backend's module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from waystation.engine.model import Labels, RunRecord, RunStatus, StepRecord, stored_json
from waystation.storage.protocol import Commit, Create, RequestKey, RunFilter, StoreError

RUN_COLUMNS = (
    "run_id, workflow_id, resource_id, status, version, create_time, update_time, owner, "
    "lease_until, due_at, header"
)

REQUEST_SCOPES_WITH_RESOURCE = """
    UPDATE requests
    SET scope = scope || ':' || (SELECT r.resource_id FROM runs r WHERE r.run_id = requests.run_id)
    WHERE EXISTS (
        SELECT 1 FROM runs r
        WHERE r.run_id = requests.run_id
          AND requests.scope IN ('start:' || r.workflow_id, 'create:' || r.workflow_id)
    )
    AND NOT EXISTS (
        SELECT 1 FROM requests n, runs r
        WHERE r.run_id = requests.run_id
          AND n.request_id = requests.request_id
          AND n.scope = requests.scope || ':' || r.resource_id
    )
"""
"""A migration of both backends. The request keys of starts and creates name the run's
resource since a72d16d ("start:wf:resource", was "start:wf"); the keys stored before it are
given theirs, so that a retry after an upgrade replays the first call's outcome instead of
starting the run again. A key that a retry already stored anew is left as it is."""

REQUEST_FINGERPRINTS = "ALTER TABLE requests ADD COLUMN fingerprint TEXT NOT NULL DEFAULT ''"
"""A migration of both backends: each key keeps its call's `RequestKey.fingerprint`. Keys
stored before it have none and replay for any arguments, as they did."""


dumps = stored_json
"""Compact JSON, as the engine's model makes it (`model.stored_json`)."""


def run_row(run: RunRecord, version: int | None = None) -> tuple[Any, ...]:
    """The values of RUN_COLUMNS for `run` (at `version` when given)."""
    return (
        run.run_id,
        run.workflow_id,
        run.resource_id,
        run.status.value,
        run.version if version is None else version,
        run.create_time,
        run.update_time,
        run.owner,
        run.lease_until,
        run.due_at,
        _header(run),
    )


def _header(run: RunRecord) -> str:
    """The header's JSON, its labels joined from the stored forms `Labels` keeps (a run's
    labels are written at every commit of the run, and a wide one has thousands)."""
    labels = run.resume_labels
    stored = labels.encoded() if isinstance(labels, Labels) else Labels(labels).encoded()
    try:
        fields = run.header_json(orjson.Fragment(stored))
        return orjson.dumps(fields, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:  # what `dumps` hands to the stdlib, which takes no Fragment
        return dumps(run.header_json())


def run_from_row(row: Sequence[Any]) -> RunRecord:
    columns = dict(
        run_id=row[0],
        workflow_id=row[1],
        resource_id=row[2],
        status=RunStatus(row[3]),
        version=row[4],
        create_time=row[5],
        update_time=row[6],
        owner=row[7],
        lease_until=row[8],
        due_at=row[9],
    )
    return RunRecord.from_columns(columns, json.loads(row[10]))


def filter_sql(
    where: RunFilter, placeholder: Callable[[int], str], first: int = 1
) -> tuple[list[str], list[Any]]:
    """WHERE clauses and their parameters; `placeholder(n)` writes the n-th parameter."""
    clauses: list[str] = []
    params: list[Any] = []

    def add(clause: str, *values: Any) -> None:
        marks = [placeholder(first + len(params) + i) for i in range(len(values))]
        clauses.append(clause.format(*marks))
        params.extend(values)

    if where.workflow_id:
        add("workflow_id = {}", where.workflow_id)
    if where.resource_id:
        add("resource_id = {}", where.resource_id)
    if where.statuses:
        inner = ", ".join("{}" for _ in where.statuses)
        add(f"status IN ({inner})", *(s.value for s in where.statuses))
    if where.created_after is not None:
        add("create_time >= {}", where.created_after)
    if where.created_before is not None:
        add("create_time < {}", where.created_before)
    if where.resource_prefixes:
        # A plain comparison of the prefix, not LIKE: SQLite's LIKE ignores case, and a
        # tenant "billing/" must not see "BILLING/1".
        inner = " OR ".join("substr(resource_id, 1, {}) = {}" for _ in where.resource_prefixes)
        add(f"({inner})", *(v for p in where.resource_prefixes for v in (len(p), p)))
    return clauses, params


@dataclass(frozen=True)
class Encoded:
    """A Commit or Create turned into SQL values when it is submitted, on the event loop:
    the engine goes on changing the run (its state, its next step) while the write waits
    for its batch, and the row must hold the run as it was at this transition."""

    op: Commit | Create
    run: tuple[Any, ...]
    steps: list[tuple[str, str]]
    deleted: list[str]
    events: list[tuple[int, str]]
    new_request: RequestKey | None
    outcomes: list[tuple[str, str, str]]

    @classmethod
    def of(cls, op: Commit | Create) -> Encoded:
        """Raises ValueError / TypeError for values JSON cannot hold."""
        if isinstance(op, Create):
            steps = _steps(op.steps)
            key, outcome = op.request, op.outcome
            settled = [] if key is None or outcome is None else [_outcome(key, outcome)]
            return cls(op, run_row(op.run), steps, [], _events(op.events), key, settled)
        return cls(
            op,
            run_row(op.run, version=op.expected_version + 1),
            _steps(op.steps),
            list(op.deleted_prefixes),
            _events(op.events),
            op.new_request,
            [_outcome(k, o) for k, o in op.settled_requests.items()],
        )

    @property
    def run_id(self) -> str:
        return self.op.run.run_id

    @property
    def expected_version(self) -> int:
        return self.op.expected_version if isinstance(self.op, Commit) else -1


def _outcome(key: RequestKey, outcome: dict[str, Any]) -> tuple[str, str, str]:
    return dumps(outcome), key.scope, key.request_id


def _steps(steps: Mapping[str, StepRecord]) -> list[tuple[str, str]]:
    return [(key, dumps(record.to_json())) for key, record in steps.items()]


def _events(events: Sequence[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(e["sequence"], dumps(e)) for e in events]


def encode(op: Commit | Create) -> Encoded:
    """`Encoded.of(op)`, with a value JSON cannot hold reported as a StoreError."""
    try:
        return Encoded.of(op)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"cannot store the run: {exc}") from exc
