"""Which step a ResumeRun targets, checked before anything changes (DESIGN.md §4).

Pure functions over a workflow and a run snapshot: they raise the domain errors and never
touch the store, so a refused resume leaves the run exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from waystation.engine import schema
from waystation.engine.definition import Step, Workflow
from waystation.engine.errors import (
    ForeachIndexNotSuspended,
    InvalidResumeData,
    LabelNotFound,
    RunNotSuspended,
    StepAmbiguous,
    StepNotSuspended,
    violations_from,
)
from waystation.engine.model import JSON, RunSnapshot, StepRecord, StepStatus
from waystation.engine.paths import Path, is_prefix
from waystation.engine.result import find, suspended_leaves


@dataclass(frozen=True)
class ResumeTarget:
    """A validated resume: the leaf to run again and its normalized data."""

    path: Path
    data: JSON


def resolve_path(
    workflow: Workflow,
    snapshot: RunSnapshot,
    step: Path,
    label: str,
    foreach_index: int | None,
) -> Path:
    """The suspended leaf named by `label`, by `step` (a leaf or a nested workflow holding
    exactly one suspended leaf), or, with neither, the run's only suspended leaf."""
    run_id = snapshot.run.run_id
    leaves = suspended_leaves(workflow, snapshot.steps)
    if not leaves:
        raise RunNotSuspended(run_id, snapshot.run.status.value, "no step is suspended")
    if label:
        target = snapshot.run.resume_labels.get(label)
        if target is None:
            raise LabelNotFound(run_id, label, leaves, snapshot.run.resume_labels)
        step, foreach_index = (
            target.path,
            (foreach_index if foreach_index is not None else target.foreach_index),
        )
    if foreach_index is not None:
        # No foreach shape exists yet: no item of any step can be suspended.
        raise ForeachIndexNotSuspended(run_id, step or leaves[0], foreach_index, leaves)
    if any(not segment for segment in step):
        raise StepNotSuspended(run_id, step, leaves)
    under = [leaf for leaf in leaves if is_prefix(step, leaf)]
    if not under or find(workflow, step) is None:
        raise StepNotSuspended(run_id, step, leaves)
    if len(under) > 1:
        raise StepAmbiguous(run_id, leaves if not step else under, step)
    return under[0]


def validate_resume_data(workflow: Workflow, run_id: str, path: Path, data: JSON) -> JSON:
    """The leaf's resume data, normalized by its resume schema; InvalidResumeData if not."""
    node = find(workflow, path)
    assert isinstance(node, Step), f"{path} is not a step"
    try:
        return schema.normalize(node.resume_schema, data)
    except ValidationError as exc:
        raise InvalidResumeData(run_id, path, violations_from(exc, "resume_data")) from exc


def claimed_records(
    snapshot: RunSnapshot, target: ResumeTarget, retry_count: int
) -> dict[Path, StepRecord]:
    """The records a claim writes: the leaf RUNNING with its resume data, and every nested
    workflow around it RUNNING, so that the executor walks back down to it."""
    steps = snapshot.steps
    out = {target.path: steps[target.path].resumed(target.data, retry_count)}
    for depth in range(1, len(target.path)):
        wrapper = target.path[:depth]
        record = steps.get(wrapper)
        if record is not None and record.status is StepStatus.SUSPENDED:
            out[wrapper] = replace(record, status=StepStatus.RUNNING)
    return out


def merge_context(stored: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Request context given on resume wins key by key over the stored one."""
    return {**stored, **given}
