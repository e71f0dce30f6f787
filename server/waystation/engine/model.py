"""Run state as the engine keeps it and the store persists it.

A run is a header (`RunRecord`: status, version, input, state, request context, result)
plus one `StepRecord` per step path. A transition rewrites the header and the records of the
steps it touched, never the whole run, so its cost does not grow with the run's length.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import orjson

from waystation.engine.paths import Path, parse_path, split_items

JSON = Any
"""A value that json.dumps accepts: what crosses the API as google.protobuf.Value."""


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUSPENDED = "suspended"
    WAITING = "waiting"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self in (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELED)


class StepStatus(StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SUSPENDED = "suspended"
    WAITING = "waiting"
    SKIPPED = "skipped"
    CANCELED = "canceled"


LONGEST_WAIT = 100 * 365.25 * 86400.0
"""The longest sleep or suspend timeout, in seconds (a century): longer ones are refused
when defined or suspended, before a wake-up time past what a Timestamp holds is stored."""


LATEST_TIME = 253_402_300_799.0
"""9999-12-31T23:59:59Z, the latest time a protobuf Timestamp holds, in seconds."""


def now() -> float:
    """Wall-clock seconds since the epoch: the unit of every stored time."""
    return time.time()


_BOOKKEEPING = {"attempt", "resume_labels", "metadata", "resumed_by"}


@dataclass
class StepRecord:
    """The result of one step path. `resumed_at` set while RUNNING means: re-execute with
    `resume_payload` (written by the resume's claim, so a crash cannot lose the data)."""

    status: StepStatus
    payload: JSON = None
    output: JSON = None
    suspend_payload: JSON = None
    resume_payload: JSON = None
    error: dict[str, Any] | None = None
    started_at: float | None = None
    ended_at: float | None = None
    suspended_at: float | None = None
    resumed_at: float | None = None
    attempt: int = 0
    resume_labels: list[str] = field(default_factory=list)
    resumed_by: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Engine bookkeeping: `iteration` / `done` for loop bodies, `wake_at` for sleeps,
    `count` (the number of items) on a foreach's aggregate record, and only there;
    `expires_at` / `on_timeout` for a suspension with a timeout."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status.value}
        for name, value in self.__dict__.items():  # the fields, in order
            # Only None and the empty bookkeeping defaults are left out: a payload or output
            # of {}, [], 0 or false is data and is kept.
            if value is not None and name != "status" and not (name in _BOOKKEEPING and not value):
                out[name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        return cls(**{**data, "status": StepStatus(data["status"])})

    def resumed(self, data: JSON, retry_count: int, actor: str = "") -> StepRecord:
        """The record a resume's claim writes: running again, with the resume data."""
        metadata = {k: v for k, v in self.metadata.items() if k not in ("expires_at", "on_timeout")}
        return evolve(
            self,
            status=StepStatus.RUNNING,
            resume_payload=data,
            resumed_at=now(),
            attempt=retry_count,
            error=None,
            resumed_by=actor,
            metadata=metadata,
        )


@dataclass
class LabelTarget:
    """Where a resume label points: the step as the API names it, the item's index in the
    innermost foreach around it, and the suspended record itself (`record`), which tells
    apart items of a foreach that runs inside the items of another."""

    path: Path
    foreach_index: int | None = None
    record: Path | None = None
    """None in labels stored before it was kept: the path and index then name the record."""

    @classmethod
    def of(cls, record: Path) -> LabelTarget:
        return cls(*split_items(record), record)

    def names(self, record: Path) -> bool:
        """Whether the label resumes the suspended record at `record`."""
        if self.record is not None:
            return self.record == record
        return (self.path, self.foreach_index) == split_items(record)

    def to_json(self) -> dict[str, Any]:
        """The stored form, made once (a run's header holds every label, and is written at
        every commit): callers must not change it. Kept in the instance's `__dict__` by hand:
        a `cached_property` takes a lock on every first read (Python 3.11)."""
        stored: dict[str, Any] | None = self.__dict__.get("_json")
        if stored is None:
            stored = {"path": list(self.path), "foreach_index": self.foreach_index}
            if self.record is not None:
                stored["record"] = list(self.record)
            self.__dict__["_json"] = stored
        return stored

    @property
    def encoded(self) -> bytes:
        """The stored form as JSON text, made once (as `to_json`'s)."""
        text: bytes | None = self.__dict__.get("_encoded")
        if text is None:
            text = self.__dict__["_encoded"] = stored_json(self.to_json()).encode()
        return text

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelTarget:
        record = data.get("record")
        return cls(
            tuple(data["path"]),
            data.get("foreach_index"),
            tuple(record) if record is not None else None,
        )


class Labels(dict[str, LabelTarget]):
    """A run's resume labels, each kept beside its stored JSON (`"label":{...}`), so that
    the header's labels are a join of bytes (`encoded`). The header holds every label and is
    written at every commit: encoding them all anew made a foreach of n items that each
    suspend with a label cost O(n^2) in Python (8,000 commits of up to 4,000 labels for
    4,000 items).

    `_stored` holds the stored form of every label, in the dict's order, or is empty until
    `encoded` makes them (labels read from the store, which a resume may not write). Every
    way of changing the dict keeps this so."""

    __slots__ = ("_stored",)

    def __init__(
        self, items: Mapping[str, LabelTarget] | Iterable[tuple[str, LabelTarget]] = ()
    ) -> None:
        super().__init__(items)
        self._stored: dict[str, bytes] = dict(items._stored) if isinstance(items, Labels) else {}

    def __setitem__(self, label: str, target: LabelTarget) -> None:
        kept = len(self._stored) == len(self)
        super().__setitem__(label, target)
        if kept:
            self._stored[label] = _stored_label(label, target)

    def __delitem__(self, label: str) -> None:
        super().__delitem__(label)
        self._stored.pop(label, None)

    def pop(self, label: str, *default: Any) -> Any:
        self._stored.pop(label, None)
        return super().pop(label, *default)

    def popitem(self) -> tuple[str, LabelTarget]:
        label, target = super().popitem()
        self._stored.pop(label, None)
        return label, target

    def clear(self) -> None:
        super().clear()
        self._stored.clear()

    def update(self, *others: Any, **more: LabelTarget) -> None:
        for label, target in dict(*others, **more).items():
            self[label] = target

    def setdefault(self, label: str, default: LabelTarget) -> LabelTarget:
        if label not in self:
            self[label] = default
        return self[label]

    def __ior__(self, other: Any) -> Labels:  # type: ignore[override,misc]
        self.update(other)
        return self

    def copy(self) -> Labels:
        copied = Labels.__new__(Labels)  # (a transition copies the run's labels)
        dict.update(copied, self)
        copied._stored = self._stored.copy()
        return copied

    def encoded(self) -> bytes:
        """The labels as the JSON object the header stores."""
        if len(self._stored) != len(self):
            self._stored = {label: _stored_label(label, t) for label, t in self.items()}
        return b"{" + b",".join(self._stored.values()) + b"}"


def _stored_label(label: str, target: LabelTarget) -> bytes:
    return stored_json(label).encode() + b":" + target.encoded


def stored_json(value: Any) -> str:
    """Compact JSON, with orjson (a tenth of the stdlib's time; encoding was the largest
    Python cost of a transition). What orjson refuses (integers beyond 64 bits, strings
    with lone surrogates) goes to the stdlib encoder, which refuses NaN and infinities
    (ValueError); orjson would write those as null, but none reaches a store: every user
    value passes `schema.dump`/`normalize` first, which refuse them."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)


@dataclass
class RunRecord:
    """A run's header. `version` increases by one with every committed change."""

    run_id: str
    workflow_id: str
    resource_id: str = ""
    status: RunStatus = RunStatus.PENDING
    version: int = 0
    create_time: float = field(default_factory=now)
    update_time: float = field(default_factory=now)
    input: JSON = None
    state: dict[str, Any] = field(default_factory=dict)
    request_context: dict[str, Any] = field(default_factory=dict)
    result: JSON = None
    error: dict[str, Any] | None = None
    resume_labels: Labels = field(default_factory=Labels)
    resume_count: int = 0
    trace: dict[str, str] = field(default_factory=dict)
    event_sequence: int = 0
    wake_at: float | None = None
    owner: str = ""
    """The replica driving the run while it is RUNNING or WAITING ("" otherwise)."""
    due_at: float | None = None
    """While SUSPENDED: the earliest deadline of its suspensions (see `expires_at`)."""
    lease_until: float | None = None
    """Until when `owner` holds the run; after that another replica may take it over."""

    def advance(self) -> int:
        """Move the run to its next version, changed now; the version it was at (what the
        commit of the change expects to find)."""
        expected = self.version
        self.version += 1
        self.update_time = now()
        return expected

    def header_json(self, labels: Any = None) -> dict[str, Any]:
        """The fields stored in the header's JSON column (the rest have columns), with
        `labels` as the labels' stored form when given (the store passes their kept JSON)."""
        return {
            "input": self.input,
            "state": self.state,
            "request_context": self.request_context,
            "result": self.result,
            "error": self.error,
            "resume_labels": (
                {k: v.to_json() for k, v in self.resume_labels.items()}
                if labels is None
                else labels
            ),
            "resume_count": self.resume_count,
            "trace": self.trace,
            "event_sequence": self.event_sequence,
            "wake_at": self.wake_at,
        }

    @classmethod
    def from_columns(cls, columns: dict[str, Any], header: dict[str, Any]) -> RunRecord:
        stored = header.get("resume_labels", {})
        labels = Labels((k, LabelTarget.from_json(v)) for k, v in stored.items())
        return cls(
            **columns,
            input=header.get("input"),
            state=header.get("state") or {},
            request_context=header.get("request_context") or {},
            result=header.get("result"),
            error=header.get("error"),
            resume_labels=labels,
            resume_count=header.get("resume_count", 0),
            trace=header.get("trace") or {},
            event_sequence=header.get("event_sequence", 0),
            wake_at=header.get("wake_at"),
        )


@dataclass
class RunSnapshot:
    """A run as read from the store: its header and every step record, by path."""

    run: RunRecord
    steps: dict[Path, StepRecord]

    @classmethod
    def from_keys(cls, run: RunRecord, steps: dict[str, StepRecord]) -> RunSnapshot:
        return cls(run, {parse_path(k): v for k, v in steps.items()})


UNFINISHED = (StepStatus.RUNNING, StepStatus.WAITING, StepStatus.SUSPENDED)


def ended(record: StepRecord, status: StepStatus, **changes: Any) -> StepRecord:
    """`record` ended now with `status` (and `changes`): whatever ends a step, it is no
    longer suspended, so its suspend payload, time and labels go (the API gives them only
    while the step is suspended)."""
    return evolve(
        record,
        status=status,
        ended_at=now(),
        suspend_payload=None,
        suspended_at=None,
        resume_labels=[],
        **changes,
    )


def stop_unfinished(snapshot: RunSnapshot) -> dict[Path, StepRecord]:
    """What a run that ends FAILED or CANCELED does with the steps it leaves running,
    waiting or suspended (a parallel sibling, a foreach's other items): they end CANCELED,
    and the run's resume labels go, since nothing in it can be resumed any more."""
    snapshot.run.resume_labels = Labels()
    return {
        path: ended(record, StepStatus.CANCELED)
        for path, record in snapshot.steps.items()
        if record.status in UNFINISHED
    }


Record = TypeVar("Record", StepRecord, RunRecord)


def evolve(record: Record, **changes: Any) -> Record:
    """`dataclasses.replace(record, **changes)` at a fraction of its cost: a shallow copy of
    the fields with `changes` applied, without running `__init__` again (these records have
    no `__post_init__`, `InitVar` or `init=False` field, where the two would differ). A
    transition copies a dozen records; `replace` was a tenth of the engine's own time."""
    if not changes.keys() <= record.__dict__.keys():
        unknown = sorted(changes.keys() - record.__dict__.keys())
        raise TypeError(f"{type(record).__name__} has no field {unknown}")
    copy = object.__new__(type(record))
    copy.__dict__.update(record.__dict__)
    copy.__dict__.update(changes)
    return copy
