"""Hypothesis properties where durability is subtle (STYLE.md rule 23, issue 8).

1. Snapshot encode/decode round-trips: what the engine stores is what it reads back
   (`StepRecord.to_json/from_json`, `RunRecord` through the SQL row and its JSON header,
   `WorkflowResultData.to_json/from_json`, step paths), also through a real SQLite file.
2. A stateful test over random interleavings of start, resume (right and wrong data, steps,
   labels and versions; dry runs; repeated request ids; two at once), cancel and crash
   (drop the engine mid-flight and open a new one on the same SQLite file) that checks:
   a completed step never runs again, every acknowledged resume (and every committed claim)
   took effect, versions only increase, and a refused call changes nothing.

Seeds and reproduction: tests/support/fuzzing.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import given, note
from hypothesis import seed as with_seed
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from pydantic import ValidationError

from tests.support import strategies as s
from tests.support.fuzzing import (
    SEEDS,
    Bridge,
    fuzz_settings,
    run_here,
    run_in_thread,
    run_seeded,
)
from tests.support.property_flows import GATES, STEPS, Answer, gates
from tests.support.workflows import lines
from waystation.engine import Engine, ResumeCommand, RunStatus, StartCommand, StepStatus
from waystation.engine.errors import (
    InvalidResumeData,
    LabelNotFound,
    RequestReused,
    ResumeConflict,
    RunAlreadyExists,
    RunNotFound,
    RunNotSuspended,
    StepNotSuspended,
    VersionMismatch,
    WaystationError,
)
from waystation.engine.model import (
    Labels,
    LabelTarget,
    RunRecord,
    RunSnapshot,
    StepRecord,
    evolve,
)
from waystation.engine.paths import format_path, item_segment, parse_path, split_items
from waystation.engine.result import WorkflowResultData
from waystation.storage import Commit, SqliteStore
from waystation.storage.sql import dumps, run_from_row, run_row

T = TypeVar("T")


@pytest.fixture(params=SEEDS, ids=lambda seed: f"seed={seed}")
def fuzz_seed(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
async def bridge() -> Bridge:
    return Bridge(asyncio.get_running_loop())


# -- snapshot encode/decode round-trips ---------------------------------------------------

json_data = s.json_values(finite=True, max_leaves=5)
json_objects = st.dictionaries(st.text(max_size=8), json_data, max_size=3)
times = st.one_of(st.none(), st.floats(min_value=0, max_value=4e9, allow_nan=False))
# Step ids as definitions allow them: never empty, without "." (the separator of a path's
# text form) and "#" (the mark of a foreach item).
step_ids = st.text(min_size=1, max_size=8).filter(lambda t: "." not in t and "#" not in t)
paths = st.lists(step_ids, min_size=1, max_size=3).map(tuple)

step_records = st.builds(
    StepRecord,
    status=st.sampled_from(StepStatus),
    payload=json_data,
    output=json_data,
    suspend_payload=json_data,
    resume_payload=json_data,
    error=st.one_of(st.none(), json_objects),
    started_at=times,
    ended_at=times,
    suspended_at=times,
    resumed_at=times,
    attempt=st.integers(0, 2**31),
    resume_labels=st.lists(st.text(max_size=8), max_size=3),
    metadata=json_objects,
)

label_targets = st.builds(
    LabelTarget,
    path=paths,
    foreach_index=st.one_of(st.none(), st.integers(0, 2**31)),
    record=st.one_of(st.none(), paths),
)

run_records = st.builds(
    RunRecord,
    run_id=st.text(min_size=1, max_size=40),
    workflow_id=st.text(min_size=1, max_size=20),
    resource_id=st.text(max_size=20),
    status=st.sampled_from(RunStatus),
    version=st.integers(0, 2**53),
    create_time=st.floats(min_value=0, max_value=4e9),
    update_time=st.floats(min_value=0, max_value=4e9),
    input=json_data,
    state=json_objects,
    request_context=json_objects,
    result=json_data,
    error=st.one_of(st.none(), json_objects),
    # as the engine keeps them (`Labels`), or a plain dict as a caller of the store may
    resume_labels=st.dictionaries(st.text(max_size=8), label_targets, max_size=3).flatmap(
        lambda labels: st.sampled_from([labels, Labels(labels)])
    ),
    resume_count=st.integers(0, 2**31),
    trace=st.dictionaries(st.text(max_size=8), st.text(max_size=32), max_size=3),
    event_sequence=st.integers(0, 2**53),
    wake_at=times,
    owner=st.text(max_size=16),
    lease_until=times,
)

workflow_results = st.builds(
    WorkflowResultData,
    run_id=st.text(max_size=40),
    workflow_id=st.text(max_size=20),
    status=st.sampled_from(RunStatus),
    version=st.integers(0, 2**53),
    input=json_data,
    result=json_data,
    error=st.one_of(st.none(), json_objects),
    steps=st.dictionaries(st.text(max_size=12), step_records, max_size=2),
    items=st.dictionaries(
        st.text(max_size=8),
        # by item, outermost first: (i,), or (i, j) inside item i of an outer foreach
        st.dictionaries(
            st.lists(st.integers(0, 2**31), min_size=1, max_size=3).map(tuple),
            step_records,
            max_size=2,
        ),
        max_size=1,
    ),
    suspended=st.lists(paths, max_size=3),
    suspend_payload=st.dictionaries(st.text(max_size=12), json_data, max_size=3),
    state=json_objects,
    resume_labels=st.dictionaries(st.text(max_size=8), label_targets, max_size=3),
    trace_id=st.text(max_size=32),
    span_id=st.text(max_size=16),
)


def stored(data: Any) -> Any:
    """`data` as a store keeps it: encoded as compact JSON, decoded again."""
    return json.loads(dumps(data))


@pytest.mark.parametrize(
    "data",
    [2**70, {"n": -(2**64)}, ["\ud800 lone surrogate"], {"k": 2**63 - 1, "u": "\u2028é\x00"}],
    ids=["huge-int", "huge-negative-int", "lone-surrogate", "edge-of-orjson"],
)
def test_the_store_encoding_keeps_what_its_fast_encoder_refuses(data: Any) -> None:
    """orjson refuses integers beyond 64 bits and lone surrogates; the store's `dumps`
    falls back to the stdlib for them, so such values are stored as they are."""
    assert stored(data) == data


def test_a_step_record_reads_back_as_it_was_written(
    fuzz_seed: int, request: pytest.FixtureRequest
) -> None:
    """StepRecord.from_json(stored(to_json())) is the record, for any JSON payloads,
    outputs and bookkeeping (falsy data such as {}, [], 0 and false included)."""

    @fuzz_settings(max_examples=60)
    @given(step_records)
    def check(record: StepRecord) -> None:
        assert StepRecord.from_json(stored(record.to_json())) == record

    run_here(check, fuzz_seed, request)


def test_evolve_copies_a_record_as_dataclasses_replace_does(
    fuzz_seed: int, request: pytest.FixtureRequest
) -> None:
    """`evolve`, the engine's cheap `replace`, gives a record equal to `replace`'s for any
    record and any fields changed, in the field order `to_json` relies on, leaves the
    original as it was, and refuses a name that is no field as `replace` does."""
    step_changes = st.fixed_dictionaries(
        {},
        optional={
            "status": st.sampled_from(StepStatus),
            "output": json_data,
            "attempt": st.integers(0, 9),
        },
    )
    run_changes = st.fixed_dictionaries(
        {},
        optional={
            "status": st.sampled_from(RunStatus),
            "version": st.integers(0, 99),
            "result": json_data,
        },
    )

    @fuzz_settings(max_examples=60)
    @given(st.one_of(st.tuples(step_records, step_changes), st.tuples(run_records, run_changes)))
    def check(case: tuple[StepRecord | RunRecord, dict[str, Any]]) -> None:
        record, changes = case
        before = dataclasses.replace(record)
        copied = evolve(record, **changes)
        assert copied == dataclasses.replace(record, **changes)
        assert list(vars(copied)) == [f.name for f in dataclasses.fields(record)]
        assert copied is not record and record == before
        with pytest.raises(TypeError):
            evolve(record, no_such_field=1)

    run_here(check, fuzz_seed, request)


def test_a_run_header_reads_back_from_its_sql_row_as_it_was_written(
    fuzz_seed: int, request: pytest.FixtureRequest
) -> None:
    """run_from_row(run_row(run)) is the run: the columns and the JSON header together
    hold every field (labels, trace, wake-up time, lease)."""

    @fuzz_settings(max_examples=60)
    @given(run_records)
    def check(run: RunRecord) -> None:
        row = list(run_row(run))
        row[-1] = dumps(stored(json.loads(row[-1])))
        assert run_from_row(row) == run
        columns = {k: getattr(run, k) for k in ("run_id", "workflow_id", "resource_id")}
        columns |= {k: getattr(run, k) for k in ("status", "version", "create_time")}
        columns |= {k: getattr(run, k) for k in ("update_time", "owner", "lease_until")}
        assert RunRecord.from_columns(columns, stored(run.header_json())) == run

    run_here(check, fuzz_seed, request)


def test_a_runs_labels_keep_their_stored_form_through_every_change(
    fuzz_seed: int, request: pytest.FixtureRequest
) -> None:
    """`Labels` keeps each label's stored JSON beside it: after any sequence of changes,
    through every method that changes a dict, on labels made empty, read from the store or
    copied (the copy changed on its own), `encoded()` is the labels' JSON in their order."""
    # Few, so that they meet; a lone surrogate, which only the stdlib's encoder writes.
    names = st.sampled_from(["a", "b", "c", "d", "é\u2028", "", "\ud800"])
    changes = st.lists(
        st.one_of(
            st.tuples(st.just("set"), names, label_targets),
            st.tuples(st.just("del"), names),
            st.tuples(st.just("pop"), names),
            st.tuples(st.just("popitem")),
            st.tuples(st.just("clear")),
            st.tuples(st.just("update"), st.dictionaries(names, label_targets, max_size=3)),
            st.tuples(st.just("ior"), st.dictionaries(names, label_targets, max_size=3)),
            st.tuples(st.just("setdefault"), names, label_targets),
            st.tuples(st.just("copy")),
            st.tuples(st.just("encode")),
        ),
        min_size=8,
        max_size=40,
    )
    start = st.dictionaries(names, label_targets, max_size=4)

    def change(labels: Labels, model: dict[str, LabelTarget], op: tuple[Any, ...]) -> Labels:
        """Apply `op` to both; the labels to go on with (a copy goes on alone)."""
        kind, *args = op
        if kind == "set":
            labels[args[0]] = model[args[0]] = args[1]
        elif kind in ("del", "pop") and args[0] in model:
            del model[args[0]]
            if kind == "del":
                del labels[args[0]]
            else:
                labels.pop(args[0])
        elif kind == "popitem" and model:
            assert labels.popitem() == model.popitem()
        elif kind == "clear":
            labels.clear()
            model.clear()
        elif kind == "update":
            labels.update(args[0])
            model.update(args[0])
        elif kind == "ior":
            labels |= args[0]
            model |= args[0]
        elif kind == "setdefault":
            assert labels.setdefault(args[0], args[1]) == model.setdefault(args[0], args[1])
        elif kind == "copy":
            copied = labels.copy()
            assert type(copied) is Labels
            # The original changes (to as many labels, others); the copy must not.
            original = dict(labels)
            for label in list(labels)[:1]:
                del labels[label]
                labels["zz"] = LabelTarget(("zz",))
                original.pop(label)
                original["zz"] = labels["zz"]
            assert json.loads(labels.encoded()) == {k: t.to_json() for k, t in original.items()}
            return copied
        elif kind == "encode":
            labels.encoded()
        return labels

    @fuzz_settings(max_examples=150)
    @given(start, changes)
    def check(first: dict[str, LabelTarget], ops: list[tuple[Any, ...]]) -> None:
        labels, model = Labels(first), dict(first)
        for op in ops:
            labels = change(labels, model, op)
            if op[0] == "copy":
                assert labels == model
        assert labels == model and list(labels) == list(model)
        stored = json.loads(labels.encoded())
        assert list(stored) == list(model)
        assert stored == {k: t.to_json() for k, t in model.items()}

    run_here(check, fuzz_seed, request)


def test_a_workflow_result_reads_back_as_it_was_written(
    fuzz_seed: int, request: pytest.FixtureRequest
) -> None:
    """WorkflowResultData.from_json(stored(to_json())) is the result: the form kept in
    RUN_SETTLED events and idempotency outcomes, replayed to later callers."""

    @fuzz_settings(max_examples=40)
    @given(workflow_results)
    def check(result: WorkflowResultData) -> None:
        assert WorkflowResultData.from_json(stored(result.to_json())) == result

    run_here(check, fuzz_seed, request)


def test_step_paths_and_item_segments_round_trip(
    fuzz_seed: int, request: pytest.FixtureRequest
) -> None:
    """parse_path inverts format_path for step ids without "."; split_items recovers the
    step id and index that item_segment put in a path segment."""

    @fuzz_settings(max_examples=150)
    @given(paths, step_ids, st.integers(0, 2**31))
    def check(path: tuple[str, ...], step_id: str, index: int) -> None:
        assert parse_path(format_path(path)) == path
        assert split_items((*path[:-1], item_segment(step_id, index))) == (
            (*path[:-1], step_id),
            index,
        )

    run_here(check, fuzz_seed, request)


async def test_a_run_and_its_step_records_read_back_from_sqlite_as_written(
    tmp_path: Path, bridge: Bridge, fuzz_seed: int, request: Any
) -> None:
    """Through a real SQLite file: a created run loads as it was; after a commit of step
    records, the snapshot is the run at the next version with exactly those records (any
    unicode, NUL characters included, in ids and data)."""
    store = SqliteStore(str(tmp_path / "roundtrip.db"))
    await store.setup()

    @fuzz_settings(max_examples=30)
    @given(
        run=run_records,
        steps=st.dictionaries(paths.map(format_path), step_records, max_size=3),
    )
    def check(run: RunRecord, steps: dict[str, StepRecord]) -> None:
        run = replace(run, run_id=f"{uuid.uuid4().hex}:{run.run_id}")
        bridge.run(lambda: store.create_run(run))
        assert bridge.run(lambda: store.load_run(run.run_id)) == run
        bridge.run(lambda: store.commit(Commit(run, run.version, steps)))
        snapshot = bridge.run(lambda: store.load(run.run_id))
        assert snapshot == RunSnapshot.from_keys(replace(run, version=run.version + 1), steps)

    try:
        await run_seeded(check, fuzz_seed, request.node.nodeid)
    finally:
        await store.close()


# -- random interleavings of start, resume, cancel and crash ------------------------------

# Every step of a run sleeps its pause first: room for a crash to land inside a step.
PAUSES = st.sampled_from([0.0, 0.005, 0.015])
BACKGROUND_PAUSES = st.sampled_from([0.003, 0.01, 0.03])
ANSWERS = st.one_of(
    st.builds(lambda n: {"value": n}, st.integers(0, 99)),
    st.sampled_from(
        [{"value": -1}, {"value": "x"}, {"value": 1.5}, {"value": None}, {}, None, [], "7", 3]
    ),
)
VALID_VALUES = st.integers(0, 99)
ANSWERS = st.one_of(ANSWERS, st.builds(lambda n: {"value": n}, st.integers(0, 99)))
# Accepted ways weigh more, so that runs get past their gates.
HOW = st.sampled_from(
    ["only", "only", "step", "label", "wrong-step", "no-step", "wrong-label", "stale", "dry-run"]
)
CRASH_DELAYS = st.sampled_from([0.0, 0.002, 0.008, 0.02, 0.05])
SETTLE_SECONDS = 15.0


def valid_value(answer: Any) -> int | None:
    try:
        return Answer.model_validate(answer).value
    except ValidationError:
        return None


@dataclass
class RunModel:
    """What the test knows of a run: where it waits, and what was acknowledged."""

    run_id: str
    log: Path
    stage: str = "unknown"
    """"first" / "second" (suspended there), "done", "canceled", "missing" (a start that a
    crash cut off before the run existed), or "unknown" (until read from the store)."""
    claimed: dict[str, int] = field(default_factory=dict)
    """Gate -> the resume value that must take effect: acknowledged by a returned call, or
    claimed by a commit that a crash interrupted."""
    version: int = 0
    interrupted: int = 0
    """How many crashes hit the run while it was executing."""


@dataclass
class Background:
    kind: str
    run_id: str
    gate: str | None
    value: int | None
    task: asyncio.Task[Any]


def snapshot_json(snapshot: RunSnapshot | None) -> Any:
    """A run as stored (header, columns and step records), for before/after comparisons."""
    if snapshot is None:
        return None
    run = snapshot.run
    columns = (run.status, run.version, run.update_time, run.owner, run.lease_until)
    steps = {format_path(p): r.to_json() for p, r in sorted(snapshot.steps.items())}
    return (columns, run.header_json(), steps)


class EngineMachine(RuleBasedStateMachine):
    """An engine on one SQLite file, driven through random interleavings; the engine and
    its store are dropped and reopened on a crash."""

    bridge: ClassVar[Bridge]
    directory: ClassVar[Path]

    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        self.db = self.directory / f"{uuid.uuid4().hex}.db"
        self.store: SqliteStore | None = None
        self.engine: Engine | None = None
        self.models: dict[str, RunModel] = {}
        self.background: list[Background] = []
        self.frozen: dict[tuple[str, str], int] = {}
        self.acknowledged: dict[tuple[str, str], WorkflowResultData] = {}
        self.asked: dict[tuple[str, str], ResumeCommand] = {}  # the calls acknowledged
        self.counter = 0
        self.run(self._open)

    # -- plumbing -------------------------------------------------------------------------

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        return self.bridge.run(fn)

    async def _open(self) -> None:
        self.store = SqliteStore(str(self.db))
        await self.store.setup()
        self.engine = Engine(self.store, [gates], resume_grace=0.5)
        await self.engine.start()

    def new_model(self) -> RunModel:
        self.counter += 1
        run_id = f"run-{self.counter}"
        model = RunModel(run_id, self.directory / f"{self.db.stem}-{run_id}.log")
        self.models[run_id] = model
        return model

    def start_command(self, model: RunModel, pause: float) -> StartCommand:
        data = {"log": str(model.log), "pause": pause}
        return StartCommand(workflow_id="prop-gates", run_id=model.run_id, input_data=data)

    def load(self, run_id: str) -> RunSnapshot | None:
        assert self.store is not None
        store = self.store
        return self.run(lambda: store.load(run_id))

    def spawn(self, fn: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
        async def create() -> asyncio.Task[Any]:
            return asyncio.ensure_future(fn())

        return self.run(create)

    def settle(self) -> None:
        """Wait for background calls and for every run to leave RUNNING; then learn the
        stage of every run whose stage is unknown from the store."""

        async def wait() -> None:
            tasks = [b.task for b in self.background]
            if tasks:
                await asyncio.wait(tasks, timeout=SETTLE_SECONDS)
            deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
            assert self.store is not None
            for run_id in self.models:
                while True:
                    run = await self.store.load_run(run_id)
                    if run is None or run.status not in (RunStatus.RUNNING, RunStatus.PENDING):
                        break
                    assert asyncio.get_running_loop().time() < deadline, f"{run_id} stuck"
                    await asyncio.sleep(0.005)

        self.run(wait)
        for item in self.background:
            self.resolve(item)
        self.background = []
        for model in self.models.values():
            self.sync_stage(model)

    def resolve(self, item: Background) -> None:
        """The outcome of a background call: acknowledged, or cut off by a crash."""
        model = self.models[item.run_id]
        assert item.task.done(), f"background {item.kind} of {item.run_id} did not finish"
        if item.task.cancelled():
            model.stage = "unknown"  # cut off by a crash: the store says what happened
            return
        error = item.task.exception()
        assert error is None, f"background {item.kind} of {item.run_id} failed: {error!r}"
        result: WorkflowResultData = item.task.result()
        if item.kind == "start":
            assert result.status is RunStatus.SUSPENDED and result.suspended == [("first",)]
            model.stage = "first"
        else:
            assert item.gate is not None and item.value is not None
            model.claimed[item.gate] = item.value
            model.stage = "second" if item.gate == "first" else "done"

    def stage_in_store(self, run_id: str) -> str:
        snapshot = self.load(run_id)
        if snapshot is None:
            return "missing"
        status = snapshot.run.status
        if status is RunStatus.SUSPENDED:
            suspended = [p for p, r in snapshot.steps.items() if r.status is StepStatus.SUSPENDED]
            assert len(suspended) == 1, suspended
            return suspended[0][0]
        if status is RunStatus.SUCCESS:
            return "done"
        if status is RunStatus.CANCELED:
            return "canceled"
        raise AssertionError(f"{run_id} is {status} after settling: {snapshot}")

    def sync_stage(self, model: RunModel) -> None:
        actual = self.stage_in_store(model.run_id)
        if model.stage == "unknown":
            model.stage = actual
        assert actual == model.stage, f"{model.run_id}: expected {model.stage}, store {actual}"

    # -- rules ----------------------------------------------------------------------------

    @initialize(target=runs)
    def first_run(self) -> str:
        return self.start(0.0)

    @rule(target=runs, pause=PAUSES)
    def start(self, pause: float) -> str:
        """A start waits until the run suspends at the first gate."""
        self.settle()
        model = self.new_model()
        assert self.engine is not None
        engine, command = self.engine, self.start_command(model, pause)
        result = self.run(lambda: engine.start_run(command))
        assert result.status is RunStatus.SUSPENDED and result.suspended == [("first",)]
        model.stage, model.version = "first", result.version
        return model.run_id

    @rule(target=runs, pause=BACKGROUND_PAUSES)
    def start_in_background(self, pause: float) -> str:
        """A start that is still executing when the next rule (perhaps a crash) comes."""
        model = self.new_model()
        assert self.engine is not None
        engine, command = self.engine, self.start_command(model, pause)
        task = self.spawn(lambda: engine.start_run(command))
        self.background.append(Background("start", model.run_id, None, None, task))
        return model.run_id

    @rule(run=runs, answer=ANSWERS, how=HOW, keyed=st.booleans())
    def resume(self, run: str, answer: Any, how: str, keyed: bool) -> None:
        """A resume is accepted exactly when it names the suspended gate (or nothing), its
        data is valid and its version current; a refused one changes nothing."""
        self.settle()
        model = self.models[run]
        gate = model.stage if model.stage in GATES else None
        other = "second" if gate == "first" else "first"
        before = self.load(run)
        command = ResumeCommand(run_id=run, resume_data=answer)
        if how == "step":
            command.step = (gate or "first",)
        elif how == "label":
            command.label = gate or "first"
        elif how == "wrong-step":
            command.step = (other,)
        elif how == "no-step":
            command.step = ("prepare", "nope")
        elif how == "wrong-label":
            command.label = "nope"
        elif how == "stale":
            command.expected_version = (before.run.version if before else 0) - 1
        elif how == "dry-run":
            command.validate_only = True
        if keyed:
            command.request_id = f"request-{uuid.uuid4().hex[:8]}"
        value = valid_value(answer)
        accepted = gate is not None and value is not None and how in ("only", "step", "label")
        accepted = accepted or (gate is not None and value is not None and how == "dry-run")
        note(f"resume {run} at {model.stage} with {answer!r} ({how}): accepted={accepted}")
        assert self.engine is not None
        engine = self.engine
        try:
            result = self.run(lambda: engine.resume_run(command))
        except WaystationError as exc:
            assert not accepted, f"a valid resume was refused: {exc!r}"
            self.assert_refusal(exc, model, how, value)
            assert snapshot_json(self.load(run)) == snapshot_json(before), "a refusal wrote"
            return
        assert accepted, f"an invalid resume was accepted: {result}"
        assert gate is not None and value is not None
        if how == "dry-run":
            assert snapshot_json(self.load(run)) == snapshot_json(before), "a dry run wrote"
            assert result.status is RunStatus.SUSPENDED and result.suspended == [(gate,)]
            return
        model.claimed[gate] = value
        model.stage = "second" if gate == "first" else "done"
        expected = RunStatus.SUSPENDED if gate == "first" else RunStatus.SUCCESS
        assert result.status is expected, result
        assert before is not None and result.version > before.run.version
        if command.request_id:
            self.acknowledged[(run, command.request_id)] = result
            self.asked[(run, command.request_id)] = command

    def assert_refusal(self, exc: Exception, model: RunModel, how: str, value: Any) -> None:
        """The reason a resume was refused, in the order the engine checks."""
        if model.stage == "missing":
            assert isinstance(exc, RunNotFound), exc
        elif model.stage not in GATES:
            assert isinstance(exc, RunNotSuspended), exc
        elif how == "stale":
            assert isinstance(exc, VersionMismatch), exc
        elif how in ("wrong-step", "no-step"):
            assert isinstance(exc, StepNotSuspended), exc
        elif how == "wrong-label":
            assert isinstance(exc, LabelNotFound), exc
        else:
            assert value is None and isinstance(exc, InvalidResumeData), exc

    @rule(run=runs, value=VALID_VALUES)
    def resume_in_background(self, run: str, value: int) -> None:
        """A valid resume that is still executing when the next rule comes."""
        self.settle()
        model = self.models[run]
        if model.stage not in GATES:
            return
        gate = model.stage
        command = ResumeCommand(run_id=run, resume_data={"value": value}, step=(gate,))
        assert self.engine is not None
        engine = self.engine
        task = self.spawn(lambda: engine.resume_run(command))
        self.background.append(Background("resume", run, gate, value, task))
        model.stage = "unknown"

    @rule(target=runs, pause=BACKGROUND_PAUSES, delay=CRASH_DELAYS)
    def crash_during_a_start(self, pause: float, delay: float) -> str:
        """A crash while a start executes (or before it is even stored)."""
        run_id = self.start_in_background(pause)
        self.crash(delay, wait=True)
        return run_id

    @rule(run=runs, value=VALID_VALUES, delay=CRASH_DELAYS)
    def crash_during_a_resume(self, run: str, value: int, delay: float) -> None:
        """A crash while a resume executes: before its claim is committed (the resume is
        lost, unacknowledged: the run is still suspended), or after (the next engine
        finishes it with its data)."""
        self.settle()
        if self.models[run].stage not in GATES:
            return
        self.resume_in_background(run, value)
        self.crash(delay, wait=True)

    @rule(run=runs, a=VALID_VALUES, b=VALID_VALUES)
    def two_resumes_at_once(self, run: str, a: int, b: int) -> None:
        """Of two concurrent resumes of one suspension exactly one wins; the other is a
        conflict (or finds the gate already passed); the winner's data took effect."""
        self.settle()
        model = self.models[run]
        if model.stage not in GATES:
            return
        gate = model.stage
        assert self.engine is not None
        engine = self.engine

        async def both() -> list[Any]:
            calls = [
                engine.resume_run(ResumeCommand(run, resume_data={"value": v}, step=(gate,)))
                for v in (a, b)
            ]
            return await asyncio.gather(*calls, return_exceptions=True)

        outcomes = self.run(both)
        won = [i for i, o in enumerate(outcomes) if isinstance(o, WorkflowResultData)]
        assert len(won) == 1, outcomes
        loser = outcomes[1 - won[0]]
        assert isinstance(loser, ResumeConflict | StepNotSuspended | RunNotSuspended), loser
        model.claimed[gate] = (a, b)[won[0]]
        model.stage = "second" if gate == "first" else "done"

    @rule(pick=st.integers(0, 2**16))
    def repeat_an_acknowledged_request(self, pick: int) -> None:
        """A repeated request id returns the first call's outcome and acts no more; reused
        with other resume data, it is refused and acts not at all."""
        # The pick is drawn whatever the state: which requests were acknowledged depends
        # on timing (crashes), and Hypothesis needs the same draws when it replays.
        if not self.acknowledged:
            return
        self.settle()
        keys = sorted(self.acknowledged)
        key = keys[pick % len(keys)]
        run = key[0]
        before, log = self.load(run), lines(self.models[run].log)
        retry = replace(self.asked[key])
        other = {"value": 1000 if retry.resume_data != {"value": 1000} else 1001}
        reused = replace(retry, resume_data=other)
        assert self.engine is not None
        engine = self.engine
        replayed = self.run(lambda: engine.resume_run(retry))
        assert replayed.to_json() == self.acknowledged[key].to_json()
        with pytest.raises(RequestReused):
            self.run(lambda: engine.resume_run(reused))
        assert snapshot_json(self.load(run)) == snapshot_json(before)
        assert lines(self.models[run].log) == log

    @rule(run=runs)
    def cancel(self, run: str) -> None:
        """Cancel a suspended run; on a finished one it is a no-op that writes nothing."""
        self.settle()
        model = self.models[run]
        before = self.load(run)
        assert self.engine is not None
        engine = self.engine
        try:
            result = self.run(lambda: engine.cancel_run(run))
        except RunNotFound:
            assert model.stage == "missing"
            return
        if model.stage in GATES:
            assert result.status is RunStatus.CANCELED
            model.stage = "canceled"
        else:
            assert snapshot_json(self.load(run)) == snapshot_json(before), "a no-op wrote"

    @rule(run=runs)
    def start_again(self, run: str) -> None:
        """Starting a run id that exists is refused and changes nothing."""
        self.settle()
        model = self.models[run]
        if model.stage == "missing":
            return
        before = self.load(run)
        assert self.engine is not None
        engine, command = self.engine, self.start_command(model, 0.0)
        try:
            self.run(lambda: engine.start_run(command))
        except RunAlreadyExists:
            assert snapshot_json(self.load(run)) == snapshot_json(before)
        else:
            raise AssertionError("a second start of one run id was accepted")

    @rule(delay=CRASH_DELAYS, wait=st.booleans())
    def crash(self, delay: float, wait: bool) -> None:
        """Drop the engine `delay` seconds from now (callers cut off, executions stopped
        where they are, nothing more written) and open a new one on the same file, which
        continues the interrupted runs. Steps that completed before the crash are frozen:
        they must never run again. Resumes whose claim was committed must take effect."""
        dead, errors = self.run(lambda: self._crash(delay))
        assert errors == [], f"calls failed instead of being cut off: {errors}"
        for run_id, snapshot in dead.items():
            model = self.models[run_id]
            if snapshot is None:
                continue
            if snapshot.run.status is RunStatus.RUNNING:
                model.interrupted += 1
            counts = self.counts(model)
            for path, record in snapshot.steps.items():
                step = path[0]
                if record.status is StepStatus.SUCCESS:
                    self.freeze(model, step, counts[step])
                if step in GATES and record.resumed_at is not None:
                    # A committed claim carries its data, or the crash would lose it.
                    assert record.resume_payload is not None, (model, record)
                if step in GATES and record.resume_payload is not None:
                    claimed = record.resume_payload["value"]
                    assert model.claimed.get(step, claimed) == claimed, (model, record)
                    model.claimed[step] = claimed
        self.run(self._open)
        if wait:
            self.settle()

    async def _crash(
        self, delay: float
    ) -> tuple[dict[str, RunSnapshot | None], list[BaseException]]:
        await asyncio.sleep(delay)
        assert self.engine is not None and self.store is not None
        for item in self.background:
            item.task.cancel()  # the callers die with the process
        await asyncio.gather(*(b.task for b in self.background), return_exceptions=True)
        await self.engine.close(grace=0)
        await self.store.close()
        errors: list[BaseException] = []
        for item in self.background:
            if item.task.cancelled():
                self.models[item.run_id].stage = "unknown"
            elif (error := item.task.exception()) is not None:
                errors.append(error)
            else:
                self.resolve(item)  # it had returned: acknowledged before the crash
        self.background = []
        # Read the file as the crash left it, with a store of its own.
        dead = SqliteStore(str(self.db))
        await dead.setup()
        try:
            return {run_id: await dead.load(run_id) for run_id in self.models}, errors
        finally:
            await dead.close()

    # -- invariants -----------------------------------------------------------------------

    def counts(self, model: RunModel) -> Counter[str]:
        return Counter(line.split(":")[0] for line in lines(model.log))

    def freeze(self, model: RunModel, step: str, count: int) -> None:
        key = (model.run_id, step)
        if key in self.frozen:
            assert count == self.frozen[key], (
                f"completed step {step} of {model.run_id} ran again: "
                f"{self.frozen[key]} -> {count} ({lines(model.log)})"
            )
        self.frozen[key] = count

    @invariant()
    def completed_steps_never_run_again(self) -> None:
        """A step that completed ran at least once and at most once more per crash that
        interrupted its run; once seen completed, it never runs again."""
        for model in self.models.values():
            snapshot = self.load(model.run_id)
            counts = self.counts(model)  # read after the store: a commit follows its line
            if snapshot is None:
                assert sum(counts.values()) == 0, (model, lines(model.log))
                continue
            for step in STEPS:
                assert counts[step] <= 1 + model.interrupted, (model, lines(model.log))
            for path, record in snapshot.steps.items():
                if record.status is StepStatus.SUCCESS:
                    assert counts[path[0]] >= 1, (model, path)
                    self.freeze(model, path[0], counts[path[0]])

    @invariant()
    def versions_only_increase(self) -> None:
        for model in self.models.values():
            snapshot = self.load(model.run_id)
            if snapshot is None:
                continue
            assert snapshot.run.version >= model.version, (model, snapshot.run.version)
            model.version = snapshot.run.version

    @invariant()
    def acknowledged_resumes_took_effect(self) -> None:
        """Every acknowledged (or durably claimed) resume ran its gate with its data, and
        no gate ever ran with any other data."""
        for model in self.models.values():
            snapshot = self.load(model.run_id)  # before the log: a commit follows its line
            ran: dict[str, set[int]] = {gate: set() for gate in GATES}
            for line in lines(model.log):
                step, _, value = line.partition(":")
                if step in GATES:
                    ran[step].add(int(value))
            for gate in GATES:
                assert len(ran[gate]) <= 1, f"{model.run_id} ran {gate} with {ran[gate]}"
            for gate, value in model.claimed.items():
                assert snapshot is not None
                record = snapshot.steps.get((gate,))
                assert record is not None, (model, gate)
                if record.status is StepStatus.SUCCESS:
                    assert record.output["values"][-1] == value, (model, record)
                    assert ran[gate] == {value}
                else:
                    # Still executing (a background resume, or one recovery continues).
                    assert record.status is StepStatus.RUNNING, (model, record)
                    assert record.resume_payload == {"value": value}, (model, record)

    def teardown(self) -> None:
        async def close() -> None:
            for item in self.background:
                item.task.cancel()
            await asyncio.gather(*(b.task for b in self.background), return_exceptions=True)
            if self.engine is not None:
                await self.engine.close(grace=0)
            if self.store is not None:
                await self.store.close()

        self.run(close)


async def test_random_interleavings_of_start_resume_cancel_and_crash_keep_every_promise(
    tmp_path: Path, bridge: Bridge, fuzz_seed: int, request: Any
) -> None:
    """Random interleavings of start (waiting or in the background), resume (right and
    wrong data, steps, labels, versions; dry runs; in the background; two at once; a
    repeated request id), cancel, a second start, and crashes at random moments: no
    completed step runs again, every acknowledged resume took effect, versions only
    increase, and a refused call changes nothing."""
    machine = type(f"EngineMachine{fuzz_seed}", (EngineMachine,), {})
    machine.bridge, machine.directory = bridge, tmp_path

    def run() -> None:
        run_state_machine_as_test(
            with_seed(fuzz_seed)(machine),
            settings=fuzz_settings(max_examples=10, stateful_step_count=18),
        )

    await run_in_thread(run, fuzz_seed, request.node.nodeid)
