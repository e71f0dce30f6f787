"""Which steps a ResumeRun targets, checked before anything changes (DESIGN.md §4).

Pure functions over a workflow and a run snapshot: they raise the domain errors and never
touch the store, so a refused resume leaves the run exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from waystation.engine import schema
from waystation.engine.definition import Step, Workflow
from waystation.engine.errors import (
    ForeachIndexNotSuspended,
    InvalidArgument,
    InvalidResumeData,
    ItemAmbiguous,
    LabelNotFound,
    RunNotSuspended,
    StepAmbiguous,
    StepNotSuspended,
    Violations,
    violations_from,
)
from waystation.engine.model import JSON, LabelTarget, RunSnapshot, StepRecord, StepStatus, evolve
from waystation.engine.paths import Path, enclosing, format_path, is_prefix, split_items
from waystation.engine.result import find, suspended_leaves, suspended_records


@dataclass(frozen=True)
class ResumeTarget:
    """A validated resume: the API path of the leaf, the records to run again (several
    items of one foreach when no index is named), and the normalized data."""

    path: Path
    records: list[Path]
    data: JSON


def resolve(
    workflow: Workflow,
    snapshot: RunSnapshot,
    step: Path,
    label: str,
    foreach_index: int | None,
) -> tuple[Path, list[Path]]:
    """The suspended leaf named by `label`, by `step` (a leaf, or a nested workflow holding
    exactly one suspended leaf), or, with neither, the run's only suspended leaf; and the
    records to resume (one foreach item with `foreach_index`, every suspended item without)."""
    run_id = snapshot.run.run_id
    records = suspended_records(workflow, snapshot.steps)
    leaves = suspended_leaves(workflow, snapshot.steps)
    if not records:
        raise RunNotSuspended(run_id, snapshot.run.status.value, "no step is suspended")
    if label:
        target = snapshot.run.resume_labels.get(label)
        if target is None:
            raise LabelNotFound(run_id, label, leaves, snapshot.run.resume_labels)
        _check_agrees(label, target, step, foreach_index)
        if target.record in records:  # the very record the label was given to
            return target.path, [target.record]
        step = target.path
        foreach_index = foreach_index if foreach_index is not None else target.foreach_index
    if any(not segment for segment in step) or find(workflow, step) is None:
        raise StepNotSuspended(run_id, step, leaves)
    under = [r for r in records if is_prefix(step, split_items(r)[0])]
    if foreach_index is not None:
        items = [r for r in under if split_items(r)[1] is not None]
        under = [r for r in items if split_items(r)[1] == foreach_index]
        if not under:
            where = step or leaves[0]
            raise ForeachIndexNotSuspended(run_id, where, foreach_index, leaves, not items)
        if len(under) > 1 and len({split_items(r)[0] for r in under}) == 1:
            # A foreach inside the items of another: the index names an item in each.
            raise ItemAmbiguous(run_id, split_items(under[0])[0], foreach_index, under, leaves)
    if not under:
        raise StepNotSuspended(run_id, step, leaves)
    named = list(dict.fromkeys(split_items(r)[0] for r in under))
    if len(named) > 1:
        raise StepAmbiguous(run_id, named, step)
    return named[0], under


def _check_agrees(label: str, target: LabelTarget, step: Path, foreach_index: int | None) -> None:
    """A label given with a step path or a foreach index must name the same suspension
    (Mastra lets the label win silently; a contradiction is more likely a client's bug)."""
    problems = Violations()
    if step and step != target.path:
        problems.add(
            "step",
            f"names [{format_path(step)}], but label {label!r} resumes "
            f"[{format_path(target.path)}]: give one of them",
        )
    if foreach_index is not None and target.foreach_index not in (None, foreach_index):
        problems.add(
            "foreach_index",
            f"is {foreach_index}, but label {label!r} resumes item {target.foreach_index}",
        )
    problems.raise_any()


def validate_resume_data(workflow: Workflow, run_id: str, path: Path, data: JSON) -> JSON:
    """The leaf's resume data, normalized by its resume schema; InvalidResumeData if not."""
    node = find(workflow, path)
    if not isinstance(node, Step):
        raise InvalidArgument("step", f"[{'.'.join(path)}] is not a step of {workflow.id!r}")
    try:
        return schema.normalize(node.resume_schema, data)
    except ValidationError as exc:
        raise InvalidResumeData(run_id, path, violations_from(exc, "resume_data", data)) from exc


def claimed_records(
    snapshot: RunSnapshot, target: ResumeTarget, retry_count: int, actor: str = ""
) -> dict[Path, StepRecord]:
    """The records a claim writes: each resumed leaf RUNNING with its resume data, and every
    nested workflow and foreach around it RUNNING, so that the walk goes back down to it."""
    steps = snapshot.steps
    out: dict[Path, StepRecord] = {}
    for leaf in target.records:
        out[leaf] = steps[leaf].resumed(target.data, retry_count, actor)
        for around in enclosing(leaf):
            record = steps.get(around)
            if record is not None and record.status is StepStatus.SUSPENDED and around not in out:
                out[around] = evolve(record, status=StepStatus.RUNNING)
    return out


def merge_context(stored: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Request context given on resume wins key by key over the stored one."""
    return {**stored, **given}
