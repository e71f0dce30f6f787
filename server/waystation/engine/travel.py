"""Time travel: which records a re-execution from a named step keeps, rewrites and drops.

Pure functions over a workflow and a snapshot, like the resume rules: the steps before the
target keep their records untouched; the target runs again (with new input, or with resume
data when it was suspended); everything after it, and inside it, is dropped and runs anew.
"""

from __future__ import annotations

from pydantic import ValidationError

from waystation.engine import schema
from waystation.engine.commands import TimeTravelCommand
from waystation.engine.definition import Branch, Parallel, Step, Workflow, entry_members
from waystation.engine.drift import check_stored_input
from waystation.engine.errors import (
    EarlierStepSuspended,
    FieldViolation,
    InvalidArgument,
    InvalidInput,
    StepNotSuspended,
    violations_from,
)
from waystation.engine.model import JSON, RunSnapshot, StepRecord, StepStatus, evolve, now
from waystation.engine.paths import ITEM_MARK, Path, is_prefix, split_items
from waystation.engine.result import find, foreach_bodies, graph, suspended_leaves


def plan(
    workflow: Workflow, snapshot: RunSnapshot, cmd: TimeTravelCommand, resume_data: JSON
) -> tuple[dict[Path, StepRecord], list[Path]]:
    """The records to write and the record paths (with everything below them) to drop."""
    target = cmd.step
    nodes = graph(workflow)  # every node by path, with its position in graph order
    position, node = nodes.get(target, (len(nodes), None))
    if not target or not isinstance(node, Step | Workflow) or any(ITEM_MARK in s for s in target):
        raise InvalidArgument("step", f"no step [{'.'.join(target)}] in {workflow.id!r}")
    _check_not_in_items(workflow, target)
    if cmd.input_data is not None:
        _check_input(workflow, target, node, cmd.input_data)
    else:
        check_stored_input(workflow, snapshot, target, node)  # a deploy may have changed it
    ancestors = {target[:d] for d in range(1, len(target))}
    later = [
        path
        for path in snapshot.steps
        if path not in ancestors
        and (
            nodes.get(split_items(path)[0], (len(nodes), None))[0] >= position
            or is_prefix(target, split_items(path)[0])
        )
    ]
    # The other arms of a branch around the target: conditions are not evaluated again, so
    # an arm that was skipped stays skipped and one that ran runs again, as a parallel's
    # later members do (dropped, it was left out of the branch and its output lost).
    arms = _other_arms(workflow, target)
    again = {
        path: StepRecord(StepStatus.RUNNING, payload=snapshot.steps[path].payload, started_at=now())
        for path in later
        if path in arms and snapshot.steps[path].status is not StepStatus.SKIPPED
    }
    dropped = [path for path in later if path not in arms]
    gone = set(dropped) | ancestors | set(again)
    kept = {p: r for p, r in snapshot.steps.items() if p not in gone}
    _check_nothing_waits_before(workflow, snapshot.run.run_id, target, kept)
    # A step before the target that failed or was canceled runs again (a failed record is
    # final to a run that goes on; here the run starts over from the target).
    failed = (StepStatus.FAILED, StepStatus.CANCELED)
    dropped += [path for path, record in kept.items() if record.status in failed]
    # The nested workflows around the target run again: what their last pass produced goes,
    # and a loop whose body one of them is has not ended (its condition is asked anew).
    writes = {
        a: evolve(
            snapshot.steps[a],
            status=StepStatus.RUNNING,
            error=None,
            output=None,
            ended_at=None,
            metadata={k: v for k, v in snapshot.steps[a].metadata.items() if k != "done"},
        )
        for a in ancestors
        if a in snapshot.steps
    }
    writes.update(again)
    writes[target] = _target_record(workflow, snapshot, cmd, resume_data)
    return writes, dropped


def _other_arms(workflow: Workflow, target: Path) -> set[Path]:
    """The paths of the other arms of every branch that holds the target or a nested
    workflow around it."""
    out: set[Path] = set()
    for depth in range(1, len(target) + 1):
        prefix, member = target[: depth - 1], target[depth - 1]
        parent = find(workflow, prefix) if prefix else workflow
        if not isinstance(parent, Workflow):
            continue
        for entry in parent.entries:
            if isinstance(entry, Branch) and any(m.id == member for m in entry.members):
                out |= {(*prefix, m.id) for m in entry.members if m.id != member}
    return out


def _check_not_in_items(workflow: Workflow, target: Path) -> None:
    """Refuse a step inside a foreach's nested workflow: it runs once per item, and a time
    travel names no item (the foreach itself can be the target)."""
    for depth in range(1, len(target)):
        if target[:depth] in foreach_bodies(workflow):
            body = ".".join(target[:depth])
            raise InvalidArgument(
                "step",
                f"[{'.'.join(target)}] runs in each item of the foreach [{body}], and time"
                f" travel cannot name an item: travel to [{body}] instead",
            )


def _check_nothing_waits_before(
    workflow: Workflow, run_id: str, target: Path, kept: dict[Path, StepRecord]
) -> None:
    """Refuse a target that the walk would not reach: a step `kept` before it (not beside
    it in one parallel or branch) is suspended, so the run would stop there again, and the
    target's new input would wait for that step's resume and then override what the resume
    decided."""
    for path, record in kept.items():
        suspended = split_items(path)[0]
        if record.status is StepStatus.SUSPENDED and _in_sequence(workflow, suspended, target):
            raise EarlierStepSuspended(run_id, target, suspended)


def _in_sequence(workflow: Workflow, before: Path, target: Path) -> bool:
    """Whether the walk finishes the step at `before` (an API path that comes earlier in
    graph order) before it starts `target`: yes unless the two first part in one parallel
    or branch entry of the workflow they share."""
    shared = 0
    while shared < min(len(before), len(target)) and before[shared] == target[shared]:
        shared += 1
    if shared in (len(before), len(target)):
        return False  # one holds the other
    parent = find(workflow, before[:shared]) if shared else workflow
    if not isinstance(parent, Workflow):
        return True
    entries = [
        entry
        for entry in parent.entries
        if any(member.id in (before[shared], target[shared]) for member in entry_members(entry))
    ]
    return not (len(entries) == 1 and isinstance(entries[0], Parallel | Branch))


def _check_input(workflow: Workflow, target: Path, node: Step | Workflow, data: JSON) -> None:
    """Refuse new input that the target would refuse when it runs, before anything changes:
    a foreach's input is the list of its items, each checked against its body's schema."""
    items = {"input_data": data}
    if target in foreach_bodies(workflow):
        if not isinstance(data, list):
            kind = type(data).__name__
            wrong = FieldViolation("input_data", f"a foreach needs a list of items, got {kind}")
            raise InvalidInput(workflow.id, [wrong], target)
        items = {f"input_data.{i}": item for i, item in enumerate(data)}
    violations: list[FieldViolation] = []
    for field, item in items.items():
        try:
            schema.normalize(node.input_schema, item)
        except ValidationError as exc:
            violations += violations_from(exc, field, item)
    if violations:
        raise InvalidInput(workflow.id, violations, target)


def check_resumable(workflow: Workflow, snapshot: RunSnapshot, target: Path) -> None:
    """Refuse resume data for a nested workflow: it goes to a suspended step, named whole
    (its resume schema is the one the data is checked against)."""
    if isinstance(find(workflow, target), Workflow):
        leaves = suspended_leaves(workflow, snapshot.steps)
        listed = ", ".join(f"[{'.'.join(p)}]" for p in leaves) or "none"
        raise InvalidArgument(
            "step",
            f"[{'.'.join(target)}] is a nested workflow: time travel with resume_data names"
            f" the suspended step itself (suspended steps: {listed})",
        )


def _target_record(
    workflow: Workflow, snapshot: RunSnapshot, cmd: TimeTravelCommand, data: JSON
) -> StepRecord:
    old = snapshot.steps.get(cmd.step)
    if cmd.resume_data is not None:
        if old is None or old.status is not StepStatus.SUSPENDED:
            leaves = suspended_leaves(workflow, snapshot.steps)
            raise StepNotSuspended(snapshot.run.run_id, cmd.step, leaves)
        payload = cmd.input_data if cmd.input_data is not None else old.payload
        return evolve(old, payload=payload).resumed(data, 0)
    if cmd.input_data is None and old is None:
        raise InvalidArgument("input_data", "the step never ran here: give its input")
    payload = cmd.input_data if cmd.input_data is not None else old.payload  # type: ignore[union-attr]
    return StepRecord(StepStatus.RUNNING, payload=payload, started_at=now())
