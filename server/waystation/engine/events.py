"""Run events (WatchRun): what each committed transition tells a watcher.

Events are derived from the step records a commit changes, so every path that commits
(a start, a step, a resume's claim, a settle) reports itself the same way, and they are
stored in the same transaction as the change they describe.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from waystation.engine.model import RunRecord, StepRecord, StepStatus, now
from waystation.engine.paths import Path, split_items


class EventType(StrEnum):
    RUN_STARTED = "run_started"
    STEP_STARTED = "step_started"
    STEP_SUCCEEDED = "step_succeeded"
    STEP_FAILED = "step_failed"
    STEP_SUSPENDED = "step_suspended"
    STEP_RESUMED = "step_resumed"
    RUN_SETTLED = "run_settled"
    STEP_CANCELED = "step_canceled"


_BY_STATUS = {
    StepStatus.SUCCESS: EventType.STEP_SUCCEEDED,
    StepStatus.FAILED: EventType.STEP_FAILED,
    StepStatus.CANCELED: EventType.STEP_CANCELED,
    StepStatus.SUSPENDED: EventType.STEP_SUSPENDED,
    StepStatus.WAITING: EventType.STEP_STARTED,
    StepStatus.SKIPPED: None,
}


def step_event_type(old: StepRecord | None, new: StepRecord) -> EventType | None:
    if new.status is StepStatus.RUNNING:
        if new.resumed_at is not None and (old is None or old.resumed_at != new.resumed_at):
            return EventType.STEP_RESUMED
        if old is not None and old.status is StepStatus.RUNNING:
            return None
        return EventType.STEP_STARTED
    if old is not None and old.status is new.status:
        return None
    return _BY_STATUS.get(new.status)


def make_event(
    run: RunRecord,
    kind: EventType,
    path: Path = (),
    record: StepRecord | None = None,
    result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An event with the run's next sequence number (the caller commits the run)."""
    run.event_sequence += 1
    api, index = split_items(path)
    event: dict[str, Any] = {
        "sequence": run.event_sequence,
        "type": kind.value,
        "time": now(),
        "run_status": run.status.value,
    }
    if path:
        event["step"] = list(api)
        if index is not None:
            event["foreach_index"] = index
    if record is not None:
        event["step_result"] = record.to_json()
    if result is not None:
        event["result"] = result
    return event


def step_events(
    run: RunRecord, before: dict[Path, StepRecord], changed: dict[Path, StepRecord]
) -> list[dict[str, Any]]:
    """The events for the records a commit changes."""
    out = []
    for path, record in changed.items():
        kind = step_event_type(before.get(path), record)
        if kind is not None:
            out.append(make_event(run, kind, path, record))
    return out


def settle_events(
    run: RunRecord,
    before: dict[Path, StepRecord],
    changed: dict[Path, StepRecord],
    result: dict[str, Any],
) -> list[dict[str, Any]]:
    """The events of a commit that settles the run: those of the records it changes, then
    RUN_SETTLED, in sequence order (a watcher that stops at RUN_SETTLED has seen every step
    end)."""
    return [
        *step_events(run, before, changed),
        make_event(run, EventType.RUN_SETTLED, result=result),
    ]
