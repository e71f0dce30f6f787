"""The SnapshotStore contract (storage/protocol.py), one suite for every backend.

The `store` fixture is parametrized over backends: a new backend (PostgreSQL) joins by
adding a param and a branch in `open_backend`, and must pass every test here unchanged.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support.postgres import database_url
from waystation.engine.model import LabelTarget, RunRecord, RunStatus, StepRecord, StepStatus
from waystation.storage import (
    Commit,
    Cursor,
    RequestKey,
    RunFilter,
    SnapshotStore,
    SqliteStore,
    StoreConflict,
    StoreUnavailable,
)
from waystation.storage.postgres import MIGRATIONS as POSTGRES_MIGRATIONS
from waystation.storage.postgres import PostgresStore
from waystation.storage.sql import REQUEST_FINGERPRINTS, REQUEST_SCOPES_WITH_RESOURCE
from waystation.storage.sqlite import MIGRATIONS as SQLITE_MIGRATIONS


def open_backend(kind: str, tmp_path: Path) -> SnapshotStore:
    if kind == "sqlite":
        return SqliteStore(str(tmp_path / "conformance.db"))
    if kind == "postgresql":
        return PostgresStore(database_url(str(tmp_path)))
    raise AssertionError(f"unknown backend {kind}")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def store(backend: str, tmp_path: Path) -> AsyncIterator[SnapshotStore]:
    opened = open_backend(backend, tmp_path)
    await opened.setup()
    try:
        yield opened
    finally:
        await opened.close()


def new_run(run_id: str, **fields: Any) -> RunRecord:
    base: dict[str, Any] = {
        "workflow_id": "wf",
        "status": RunStatus.RUNNING,
        "version": 1,
        "input": {"n": 1},
    }
    return RunRecord(run_id, **{**base, **fields})


def step(status: StepStatus = StepStatus.SUCCESS, **fields: Any) -> StepRecord:
    return StepRecord(status, **fields)


async def created(store: SnapshotStore, run_id: str, **fields: Any) -> RunRecord:
    run = new_run(run_id, **fields)
    await store.create_run(run)
    return run


def advanced(run: RunRecord, **changes: Any) -> RunRecord:
    """The run as a writer holds it after one transition (the version it will write)."""
    return replace(run, version=run.version + 1, **changes)


# -- create and commit --------------------------------------------------------------------


async def test_create_run_twice_conflicts_and_keeps_the_first(store: SnapshotStore) -> None:
    """create_run of an existing run id raises StoreConflict and leaves the first run as it
    was."""
    await created(store, "r1", resource_id="first")

    with pytest.raises(StoreConflict):
        await store.create_run(new_run("r1", resource_id="second", workflow_id="other"))

    loaded = await store.load_run("r1")
    assert loaded is not None
    assert (loaded.resource_id, loaded.workflow_id, loaded.version) == ("first", "wf", 1)


async def test_create_run_stores_every_header_field(store: SnapshotStore) -> None:
    """A created run loads back with every header field it was written with."""
    run = new_run(
        "full",
        resource_id="tenant-1",
        status=RunStatus.PENDING,
        version=3,
        state={"count": 2},
        request_context={"user": {"id": "u1"}},
        resume_labels={"gate": LabelTarget(("outer", "gate"), 2)},
        resume_count=4,
        trace={"trace_id": "ab" * 16},
    )
    await store.create_run(run)

    assert await store.load_run("full") == run


async def test_create_run_with_step_records_stores_them_with_the_run(
    store: SnapshotStore,
) -> None:
    """create_run with step records (a start's insert with its first step's RUNNING record)
    writes them in the same transaction; a second create of the id writes none of its own."""
    run = new_run("with-steps", version=2)
    first = step(StepStatus.RUNNING, payload={"x": 1})
    await store.create_run(run, steps={"one": first})

    snapshot = await store.load("with-steps")
    assert snapshot is not None
    assert snapshot.run == run
    assert snapshot.steps == {("one",): first}

    with pytest.raises(StoreConflict):
        await store.create_run(new_run("with-steps"), steps={"two": step()})
    again = await store.load("with-steps")
    assert again is not None and set(again.steps) == {("one",)}


async def test_commit_at_the_expected_version_bumps_it_and_upserts_steps(
    store: SnapshotStore,
) -> None:
    """A commit at the stored version writes the header at expected_version + 1 and upserts
    the step records: new paths are added, changed paths replaced, others kept."""
    run = await created(store, "r1")
    first = advanced(run, state={"a": 1})
    await store.commit(
        Commit(
            first,
            1,
            {"one": step(output=1), "two": step(StepStatus.RUNNING, payload={"x": 1})},
        )
    )
    second = advanced(first, status=RunStatus.SUCCESS, result={"done": True})
    await store.commit(Commit(second, 2, {"two": step(output=2), "three": step(output=3)}))

    snapshot = await store.load("r1")
    assert snapshot is not None
    assert snapshot.run.version == 3
    assert snapshot.run.status is RunStatus.SUCCESS
    assert snapshot.run.result == {"done": True}
    assert snapshot.run.state == {"a": 1}
    assert snapshot.steps == {
        ("one",): step(output=1),
        ("two",): step(output=2),
        ("three",): step(output=3),
    }


@pytest.mark.parametrize(
    "falsy",
    [0, 0.0, False, "", [], {}],
    ids=["zero", "zero-float", "false", "empty-string", "empty-list", "empty-object"],
)
async def test_step_records_keep_falsy_json_values(store: SnapshotStore, falsy: Any) -> None:
    """A step's output, payload, suspend and resume payloads that are falsy JSON (0, false,
    "", [], {}) load back as written, not as null: a step that returned 0 returned something."""
    run = await created(store, "r1")
    record = step(output=falsy, payload=falsy, resume_payload=falsy, suspend_payload=falsy)
    await store.commit(Commit(advanced(run), 1, {"s": record}))

    snapshot = await store.load("r1")
    assert snapshot is not None
    loaded = snapshot.steps[("s",)]
    assert (loaded.output, loaded.payload, loaded.resume_payload, loaded.suspend_payload) == (
        falsy,
        falsy,
        falsy,
        falsy,
    )
    assert type(loaded.output) is type(falsy)


async def test_commit_at_a_stale_version_conflicts_and_writes_nothing(
    store: SnapshotStore,
) -> None:
    """A commit whose expected_version is not the stored one raises StoreConflict and writes
    neither the header nor any step record."""
    run = await created(store, "r1")
    await store.commit(Commit(advanced(run), 1, {"one": step(output=1)}))

    stale = advanced(run, status=RunStatus.FAILED, state={"stale": True})
    with pytest.raises(StoreConflict):
        await store.commit(
            Commit(stale, 1, {"one": step(StepStatus.FAILED), "two": step(output=2)})
        )

    snapshot = await store.load("r1")
    assert snapshot is not None
    assert snapshot.run.version == 2
    assert snapshot.run.status is RunStatus.RUNNING
    assert snapshot.run.state == {}
    assert snapshot.steps == {("one",): step(output=1)}


async def test_commit_to_a_missing_run_conflicts(store: SnapshotStore) -> None:
    """A commit to a run that does not exist raises StoreConflict and creates nothing."""
    with pytest.raises(StoreConflict):
        await store.commit(Commit(new_run("ghost", version=2), 1, {"one": step()}))

    assert await store.load("ghost") is None


async def test_concurrent_commits_to_different_runs_all_land(store: SnapshotStore) -> None:
    """Fifty commits to fifty runs issued at once (group commit) all succeed, each with its
    own header and steps."""
    runs = [await created(store, f"r{i:02}") for i in range(50)]

    await asyncio.gather(
        *(
            store.commit(Commit(advanced(run, state={"i": i}), 1, {"s": step(output={"i": i})}))
            for i, run in enumerate(runs)
        )
    )

    for i, run in enumerate(runs):
        snapshot = await store.load(run.run_id)
        assert snapshot is not None
        assert (snapshot.run.version, snapshot.run.state) == (2, {"i": i})
        assert snapshot.steps == {("s",): step(output={"i": i})}


async def test_concurrent_commits_at_one_version_have_exactly_one_winner(
    store: SnapshotStore,
) -> None:
    """Two commits to one run at the same expected_version, issued at once: exactly one
    succeeds, the other raises StoreConflict, and only the winner's writes are stored."""
    run = await created(store, "r1")
    left = Commit(advanced(run, state={"by": "left"}), 1, {"left": step(output="l")})
    right = Commit(advanced(run, state={"by": "right"}), 1, {"right": step(output="r")})

    outcomes = await asyncio.gather(store.commit(left), store.commit(right), return_exceptions=True)

    winners = [c for c, o in zip((left, right), outcomes, strict=True) if o is None]
    losers = [o for o in outcomes if o is not None]
    assert len(winners) == 1
    assert len(losers) == 1 and isinstance(losers[0], StoreConflict)
    [winner] = winners
    snapshot = await store.load("r1")
    assert snapshot is not None
    assert snapshot.run.version == 2
    assert snapshot.run.state == winner.run.state
    assert set(snapshot.steps) == {(key,) for key in winner.steps}


async def test_load_returns_the_header_and_every_step_by_path(store: SnapshotStore) -> None:
    """load returns the run's header and all its step records, nested paths split into
    their segments; load and load_run of a missing run return None."""
    run = await created(store, "r1")
    await store.commit(
        Commit(
            advanced(run),
            1,
            {
                "first": step(output={"a": 1}),
                "inner": step(StepStatus.SUSPENDED),
                "inner.b": step(StepStatus.SUSPENDED, suspend_payload={"why": "b"}),
            },
        )
    )

    snapshot = await store.load("r1")
    assert snapshot is not None
    assert snapshot.run == advanced(run, update_time=snapshot.run.update_time)
    assert snapshot.steps == {
        ("first",): step(output={"a": 1}),
        ("inner",): step(StepStatus.SUSPENDED),
        ("inner", "b"): step(StepStatus.SUSPENDED, suspend_payload={"why": "b"}),
    }
    assert await store.load("missing") is None
    assert await store.load_run("missing") is None


# -- listing --------------------------------------------------------------------------------


async def test_list_runs_orders_newest_first_then_by_run_id(store: SnapshotStore) -> None:
    """list_runs returns runs newest first; runs created at the same time come by run_id,
    descending; limit caps the page."""
    await created(store, "old", create_time=100.0)
    await created(store, "tie-a", create_time=200.0)
    await created(store, "tie-b", create_time=200.0)
    await created(store, "new", create_time=300.0)

    listed = await store.list_runs(RunFilter(), 10, None)
    assert [r.run_id for r in listed] == ["new", "tie-b", "tie-a", "old"]
    assert [r.run_id for r in await store.list_runs(RunFilter(), 2, None)] == ["new", "tie-b"]


async def test_list_runs_applies_each_filter_and_their_combination(store: SnapshotStore) -> None:
    """workflow_id, statuses, resource_id, created_after (inclusive) and created_before
    (exclusive) each narrow the list, and they combine with AND."""
    await created(store, "a", workflow_id="wf1", resource_id="x", create_time=10.0)
    await created(
        store, "b", workflow_id="wf1", resource_id="y", status=RunStatus.SUSPENDED, create_time=20.0
    )
    await created(
        store, "c", workflow_id="wf2", resource_id="x", status=RunStatus.SUCCESS, create_time=30.0
    )
    await created(
        store, "d", workflow_id="wf2", resource_id="y", status=RunStatus.FAILED, create_time=40.0
    )

    async def ids(**where: Any) -> list[str]:
        return [r.run_id for r in await store.list_runs(RunFilter(**where), 10, None)]

    assert await ids(workflow_id="wf1") == ["b", "a"]
    assert await ids(statuses=[RunStatus.SUSPENDED, RunStatus.FAILED]) == ["d", "b"]
    assert await ids(resource_id="x") == ["c", "a"]
    assert await ids(created_after=20.0) == ["d", "c", "b"]
    assert await ids(created_before=30.0) == ["b", "a"]
    assert await ids(created_after=20.0, created_before=40.0) == ["c", "b"]
    assert await ids(workflow_id="wf2", resource_id="y", statuses=[RunStatus.FAILED]) == ["d"]
    assert await ids(workflow_id="none") == []


async def test_list_runs_after_a_cursor_continues_without_gaps_or_repeats(
    store: SnapshotStore,
) -> None:
    """Pages that continue strictly after the last run of the previous page (also through
    runs created at the same time) list every matching run exactly once, in order."""
    times = [100.0, 200.0, 200.0, 200.0, 300.0, 400.0, 400.0]
    for i, at in enumerate(times):
        await created(store, f"r{i}", create_time=at)
    await created(store, "other", workflow_id="skip", create_time=250.0)
    where = RunFilter(workflow_id="wf")
    everything = [r.run_id for r in await store.list_runs(where, 100, None)]

    pages: list[str] = []
    after: Cursor | None = None
    while True:
        page = await store.list_runs(where, 2, after)
        pages += [r.run_id for r in page]
        if len(page) < 2:
            break
        after = Cursor(page[-1].create_time, page[-1].run_id)

    assert everything == ["r6", "r5", "r4", "r3", "r2", "r1", "r0"]
    assert pages == everything


async def test_runs_with_status_finds_the_runs_in_that_status(store: SnapshotStore) -> None:
    """runs_with_status returns the ids of the runs in a status, at most `limit`."""
    await created(store, "run-1", status=RunStatus.RUNNING)
    await created(store, "run-2", status=RunStatus.RUNNING)
    await created(store, "susp", status=RunStatus.SUSPENDED)

    assert sorted(await store.runs_with_status(RunStatus.RUNNING, 10)) == ["run-1", "run-2"]
    assert await store.runs_with_status(RunStatus.SUSPENDED, 10) == ["susp"]
    assert len(await store.runs_with_status(RunStatus.RUNNING, 1)) == 1
    assert await store.runs_with_status(RunStatus.WAITING, 10) == []


async def test_each_indexed_field_a_commit_changes_is_what_the_queries_find(
    store: SnapshotStore,
) -> None:
    """Transitions that change status, lease, due time or resource (one at a time, and none
    at all) leave every query that reads them through an index in step with the rows."""
    run = await created(store, "r", resource_id="x", owner="me", lease_until=50.0)
    other = await created(store, "o", resource_id="x", status=RunStatus.SUCCESS)

    async def commit(**changes: Any) -> None:
        nonlocal run
        run = advanced(run, **changes)
        await store.commit(Commit(run, run.version - 1, {"s": step(output=run.version)}))

    async def resource(rid: str) -> list[str]:
        return [r.run_id for r in await store.list_runs(RunFilter(resource_id=rid), 10, None)]

    await commit()  # no indexed field changes
    assert await store.runs_with_status(RunStatus.RUNNING, 10) == ["r"]
    assert await store.claim_expired("thief", now=40.0, until=90.0, limit=10) == []
    await commit(status=RunStatus.SUSPENDED, owner="", lease_until=None, due_at=100.0)
    assert await store.runs_with_status(RunStatus.RUNNING, 10) == []
    assert await store.due_runs(now=99.0, limit=10) == []
    assert await store.due_runs(now=100.0, limit=10) == ["r"]
    await commit(due_at=200.0)
    assert await store.due_runs(now=150.0, limit=10) == []
    await commit(resource_id="y")
    assert await resource("x") == ["o"] and await resource("y") == ["r"]
    await commit(status=RunStatus.RUNNING, owner="me", lease_until=60.0, due_at=None)
    assert await store.due_runs(now=300.0, limit=10) == []
    assert await store.claim_expired("thief", now=55.0, until=90.0, limit=10) == []
    assert await store.claim_expired("thief", now=65.0, until=90.0, limit=10) == ["r"]
    loaded = await store.load_run("r")
    assert loaded is not None
    assert (loaded.status, loaded.owner, loaded.lease_until, loaded.due_at, loaded.resource_id) == (
        RunStatus.RUNNING,
        "thief",
        90.0,
        None,
        "y",
    )
    assert loaded.version == run.version + 1
    assert (await store.load_run("o")) == other


async def test_a_page_of_events_stops_at_the_event_that_fills_max_chars(
    store: SnapshotStore,
) -> None:
    """With `max_chars`, a page of events ends with the one that brings their stored JSON
    to that size (the first always comes, however large); without it, `limit` alone counts.
    A watcher that stops reading holds one such page."""
    run = await created(store, "sized")
    sizes = [100, 3_000, 100, 100, 5_000, 100]
    events = [{"sequence": i, "pad": "x" * n} for i, n in enumerate(sizes, 1)]
    await store.commit(Commit(advanced(run), 1, events=events))

    async def page(after: int, max_chars: int | None) -> list[int]:
        return [e["sequence"] for e in await store.list_events("sized", after, 5, max_chars)]

    assert await page(0, None) == [1, 2, 3, 4, 5]
    assert await page(0, 1_000) == [1, 2]  # 2 brings the page past 1,000
    assert await page(0, 10) == [1]
    assert await page(2, 1_000) == [3, 4, 5]
    assert await page(4, 1) == [5]
    assert await page(5, 100_000) == [6]
    assert await page(6, 1_000) == []


# -- request keys ---------------------------------------------------------------------------


async def test_create_run_records_its_request_key(store: SnapshotStore) -> None:
    """create_run with a request key records it for the run, with the call's fingerprint
    and without an outcome; a second run with the same key (whatever its fingerprint)
    conflicts and is not created."""
    key = RequestKey("start:wf", "req-1", "f1")
    await store.create_run(new_run("r1"), key)

    seen = await store.get_request(RequestKey("start:wf", "req-1", "asked-anew"))
    assert seen is not None
    assert (seen.run_id, seen.outcome, seen.fingerprint) == ("r1", None, "f1")
    with pytest.raises(StoreConflict):
        await store.create_run(new_run("r2"), RequestKey("start:wf", "req-1", "f2"))
    assert await store.load_run("r2") is None
    assert await store.get_request(RequestKey("start:wf", "other")) is None
    assert await store.get_request(RequestKey("start:other", "req-1")) is None


async def test_create_run_may_record_its_requests_outcome(store: SnapshotStore) -> None:
    """create_run with a request key and an outcome (a run that settles in its first
    commit, asleep) records both; an outcome without a key records nothing."""
    key = RequestKey("start:wf", "req-1")
    outcome = {"status": "waiting", "version": 1}
    await store.create_run(new_run("r1"), key, outcome=outcome)
    await store.create_run(new_run("r2"), outcome=outcome)

    seen = await store.get_request(key)
    assert seen is not None
    assert (seen.run_id, seen.outcome) == ("r1", outcome)
    assert await store.load_run("r2") is not None


async def test_commit_records_a_new_request_key(store: SnapshotStore) -> None:
    """A commit with new_request records the key for the run, with its fingerprint."""
    run = await created(store, "r1")
    key = RequestKey("resume:r1", "req-1", "f1")

    await store.commit(Commit(advanced(run), 1, new_request=key))

    seen = await store.get_request(key)
    assert seen is not None
    assert (seen.run_id, seen.fingerprint) == ("r1", "f1")


async def test_a_duplicate_new_request_key_makes_the_commit_conflict_with_nothing_written(
    store: SnapshotStore,
) -> None:
    """A commit whose new_request key exists already raises StoreConflict; neither its header
    nor its steps are written, and the key still points at its first run."""
    first = await created(store, "first")
    key = RequestKey("resume:any", "req-1")
    await store.commit(Commit(advanced(first), 1, new_request=key))
    second = await created(store, "second")

    with pytest.raises(StoreConflict):
        await store.commit(
            Commit(advanced(second, state={"x": 1}), 1, {"s": step()}, new_request=key)
        )

    snapshot = await store.load("second")
    assert snapshot is not None
    assert (snapshot.run.version, snapshot.run.state, snapshot.steps) == (1, {}, {})
    seen = await store.get_request(key)
    assert seen is not None
    assert seen.run_id == "first"


async def test_settled_requests_fill_in_the_outcome(store: SnapshotStore) -> None:
    """A commit with settled_requests stores each key's outcome, which get_request returns."""
    run = await created(store, "r1")
    key = RequestKey("start:wf", "req-1")
    await store.commit(Commit(advanced(run), 1, new_request=key))
    outcome = {"run_id": "r1", "status": "success", "result": {"value": [1, 2.5, None]}}

    settled = advanced(advanced(run), status=RunStatus.SUCCESS)
    await store.commit(Commit(settled, 2, settled_requests={key: outcome}))

    seen = await store.get_request(key)
    assert seen is not None
    assert (seen.run_id, seen.outcome) == ("r1", outcome)


# -- delete, setup, reopen --------------------------------------------------------------------


async def test_delete_run_removes_the_run_its_steps_and_its_request_keys(
    store: SnapshotStore,
) -> None:
    """delete_run removes the header, the steps and the request keys of one run, returns
    True, and leaves other runs alone; deleting again returns False."""
    key = RequestKey("start:wf", "req-1")
    run = new_run("gone")
    await store.create_run(run, key)
    await store.commit(Commit(advanced(run), 1, {"s": step()}))
    kept = await created(store, "kept")

    assert await store.delete_run("gone") is True

    assert await store.load("gone") is None
    assert await store.get_request(key) is None
    assert await store.runs_with_status(RunStatus.RUNNING, 10) == ["kept"]
    assert await store.delete_run("gone") is False
    assert await store.load_run("kept") == kept
    # The run id and the request key are free again.
    await store.create_run(new_run("gone"), key)


async def test_a_commit_of_a_deleted_run_never_lands_in_the_run_that_took_its_id(
    store: SnapshotStore,
) -> None:
    """A writer still holding a run that was deleted (a continuation on another replica)
    commits at the version it expects; the run made again under that id has reached the
    same version. The compare-and-set refuses it (StoreConflict), and the new run keeps its
    own records: the version alone let the old run's continuation overwrite the new one."""
    old = new_run("reborn", create_time=1000.0)
    await store.create_run(old)
    await store.delete_run("reborn")
    again = new_run("reborn", create_time=2000.0)
    await store.create_run(again, steps={"s": step(output="new")})

    with pytest.raises(StoreConflict):
        await store.commit(Commit(advanced(old), 1, {"s": step(output="old")}))

    kept = await store.load("reborn")
    assert kept is not None
    assert (kept.run.create_time, kept.run.version) == (2000.0, 1)
    assert kept.steps[("s",)].output == "new"


async def test_delete_run_at_a_version_deletes_nothing_once_the_run_moved_on(
    store: SnapshotStore,
) -> None:
    """With `expected_version`, delete_run is a compare-and-set: a run committed past that
    version (a resume claimed on another replica) raises StoreConflict naming the run and
    keeps every record; at its version the run goes; an unknown run is False."""
    run = new_run("moving")
    await store.create_run(run)
    await store.commit(Commit(advanced(run), 1, {"s": step()}))

    with pytest.raises(StoreConflict) as conflict:
        await store.delete_run("moving", 1)

    assert conflict.value.metadata == {"run_id": "moving"}
    kept = await store.load("moving")
    assert kept is not None and list(kept.steps) == [("s",)]
    assert await store.delete_run("moving", 2) is True
    assert await store.load("moving") is None
    assert await store.delete_run("moving", 2) is False


async def test_setup_twice_is_idempotent_and_data_survives_reopening(
    backend: str, tmp_path: Path
) -> None:
    """setup() on a set-up database changes nothing, and a store reopened on the same
    database finds every run, step and request key written before it was closed."""
    first = open_backend(backend, tmp_path)
    await first.setup()
    key = RequestKey("start:wf", "req-1")
    run = new_run("durable")
    await first.create_run(run, key)
    await first.commit(Commit(advanced(run), 1, {"s": step(output=1)}))
    await first.close()

    again = open_backend(backend, tmp_path)
    await again.setup()
    await again.close()
    reopened = open_backend(backend, tmp_path)
    await reopened.setup()
    try:
        snapshot = await reopened.load("durable")
        assert snapshot is not None
        assert snapshot.run.version == 2
        assert snapshot.steps == {("s",): step(output=1)}
        seen = await reopened.get_request(key)
        assert seen is not None
        assert seen.run_id == "durable"
    finally:
        await reopened.close()


async def raw_sql(backend: str, tmp_path: Path, statement: str) -> None:
    """`statement` on the backend's database, around the store (as an older server or an
    operator would)."""
    if backend == "sqlite":
        with sqlite3.connect(tmp_path / "conformance.db") as db:
            db.execute(statement)
        return
    conn = await asyncpg.connect(database_url(str(tmp_path)))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def test_request_keys_a_server_before_a72d16d_stored_replay_after_the_upgrade(
    backend: str, tmp_path: Path
) -> None:
    """Start and create keys name the run's resource since a72d16d; the keys an older
    server stored did not, and a retry after the upgrade started a second run. The
    migration gives them their resource; a key a retry already stored anew stays."""
    first = open_backend(backend, tmp_path)
    await first.setup()
    old_keys = {
        "started": RequestKey("start:wf", "req-1"),
        "made": RequestKey("create:wf", "req-2"),
        "twice": RequestKey("start:wf", "req-4"),
    }
    for run_id, key in old_keys.items():
        await first.create_run(new_run(run_id, resource_id="team-a"), key)
    await first.create_run(new_run("other-flow", workflow_id="wf2"), RequestKey("start:wf", "r5"))
    await first.create_run(new_run("modern", resource_id="b"), RequestKey("start:wf:b", "req-3"))
    await first.create_run(new_run("retried"), RequestKey("start:wf:team-a", "req-4"))
    await first.close()
    await as_before_migration(backend, tmp_path, REQUEST_SCOPES_WITH_RESOURCE)

    upgraded = open_backend(backend, tmp_path)
    await upgraded.setup()
    try:
        expected = {
            ("start:wf:team-a", "req-1"): "started",
            ("create:wf:team-a", "req-2"): "made",
            ("start:wf:b", "req-3"): "modern",
            ("start:wf:team-a", "req-4"): "retried",
            ("start:wf", "req-4"): "twice",  # its new key was taken: left as it was
            ("start:wf", "r5"): "other-flow",  # another workflow's run: not a start of wf
        }
        found = {}
        for scope, request_id in expected:
            seen = await upgraded.get_request(RequestKey(scope, request_id))
            found[scope, request_id] = seen.run_id if seen else None
        assert found == expected
        assert await upgraded.get_request(RequestKey("start:wf", "req-1")) is None
    finally:
        await upgraded.close()


async def test_request_keys_stored_before_fingerprints_have_none_after_the_upgrade(
    backend: str, tmp_path: Path
) -> None:
    """Keys an older server stored have no fingerprint (the engine replays them for any
    arguments, as that server did); keys stored after the upgrade keep theirs."""
    first = open_backend(backend, tmp_path)
    await first.setup()
    await first.create_run(new_run("old"), RequestKey("start:wf", "req-1"))
    await first.close()
    await as_before_migration(backend, tmp_path, REQUEST_FINGERPRINTS)

    upgraded = open_backend(backend, tmp_path)
    await upgraded.setup()
    try:
        await upgraded.create_run(new_run("new"), RequestKey("start:wf", "req-2", "f2"))
        old = await upgraded.get_request(RequestKey("start:wf", "req-1", "f1"))
        new = await upgraded.get_request(RequestKey("start:wf", "req-2"))
        assert old is not None and new is not None
        assert (old.run_id, old.fingerprint, new.run_id, new.fingerprint) == (
            "old",
            "",
            "new",
            "f2",
        )
    finally:
        await upgraded.close()


async def as_before_migration(backend: str, tmp_path: Path, migration: str) -> None:
    """The database as a server that knew the migrations before `migration` left it: the
    columns of later ones dropped, their versions forgotten, so that setup() runs them."""
    migrations = SQLITE_MIGRATIONS if backend == "sqlite" else POSTGRES_MIGRATIONS
    known = migrations.index(migration)  # versions 1..known came before it
    if known <= migrations.index(REQUEST_FINGERPRINTS):
        await raw_sql(backend, tmp_path, "ALTER TABLE requests DROP COLUMN fingerprint")
    await raw_sql(backend, tmp_path, f"DELETE FROM schema_version WHERE version > {known}")


async def test_a_lease_renewal_returns_the_runs_it_renewed(store: SnapshotStore) -> None:
    """The runs still the owner's are renewed and returned; one another replica took over
    (or that was released) is neither, so the owner knows it lost it."""
    await created(store, "mine", owner="me", lease_until=50.0)
    await created(store, "taken", owner="me", lease_until=10.0)
    await created(store, "released", owner="", lease_until=None)
    taken = await store.claim_expired("thief", now=20.0, until=90.0, limit=10)
    assert sorted(taken) == ["released", "taken"]
    renewed = await store.renew_leases("me", ["mine", "taken", "released", "gone"], 120.0)
    assert sorted(renewed) == ["mine"]
    assert await store.renew_leases("me", [], 130.0) == []
    loaded = {r: await store.load_run(r) for r in ("mine", "taken")}
    assert [(r.owner, r.lease_until) for r in loaded.values() if r] == [
        ("me", 120.0),
        ("thief", 90.0),
    ]


async def test_a_postgresql_connection_lost_under_a_query_is_store_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg raises InternalClientError ("cannot switch to state ...") from a connection
    that PostgreSQL closed under a query, as when it restarts; a WatchRun then answered
    INTERNAL. It is StoreUnavailable (UNAVAILABLE, which clients retry), as asyncpg's other
    errors of a lost connection are."""
    store = PostgresStore(database_url(str(tmp_path)))
    await store.setup()
    try:

        async def lost(pool: Any, *args: Any) -> Any:
            raise asyncpg.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress"
            )

        monkeypatch.setattr(type(store.pool), "fetch", lost)  # its instances take no attributes
        with pytest.raises(StoreUnavailable):
            await store.load_run("any")
    finally:
        await store.close()
