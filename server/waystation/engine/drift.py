"""Whether a run's records still fit its workflow as deployed now.

Service owners change their workflow modules and deploy them while runs wait. A
continuation walks the workflow as deployed now and skips the steps whose records say they
ran, so a change before the point a run had reached would silently change what it does: a
step added before a suspended one would run after the resume, its output dropped; a step
moved after it would feed its old output onward; a suspended step renamed would leave the
run waiting for a step that no longer exists. A resume is refused instead, before anything
changes (FAILED_PRECONDITION `WORKFLOW_CHANGED`), when:

- a step the run waits in is not in the workflow any more, or not as a step;
- in a sequence the run is part-way through, an entry that has not finished (or never ran)
  comes before one that has run: steps were added or moved before the point it reached;
- the stored input or suspend payload of the step to resume fails its schemas as deployed.

Changes after the point a run has reached (steps added after it, new code, new resume
schemas, retry settings) apply to it as they do to new runs; docs/workflows.md says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from waystation.engine import schema
from waystation.engine.definition import Branch, Foreach, Sleep, Step, Workflow, entry_members
from waystation.engine.errors import WorkflowChanged, violations_from
from waystation.engine.model import RunSnapshot, StepStatus
from waystation.engine.paths import ITEM_MARK, Path, format_path, is_prefix, shown, split_items
from waystation.engine.result import foreach_bodies, graph

FINISHED = frozenset({StepStatus.SUCCESS, StepStatus.SKIPPED})
WAITING = frozenset({StepStatus.SUSPENDED, StepStatus.RUNNING, StepStatus.WAITING})


def check_fits(workflow: Workflow, snapshot: RunSnapshot) -> None:
    """Raise WorkflowChanged if `workflow` as deployed cannot continue the run's records."""
    run_id = snapshot.run.run_id
    nodes = graph(workflow)
    statuses: dict[Path, set[StepStatus]] = {}
    itemized: set[Path] = set()  # what ran as a foreach's body (its items, its aggregate)
    for path, record in snapshot.steps.items():
        api = path
        if any(ITEM_MARK in segment for segment in path):
            api = split_items(path)[0]
            itemized.update(api[:depth] for depth, s in enumerate(path, 1) if ITEM_MARK in s)
        if "count" in record.metadata:  # a foreach's aggregate record
            itemized.add(api)
        found = statuses.get(api)
        if found is None:
            statuses[api] = {record.status}
        else:
            found.add(record.status)
    waiting = [api for api, seen in statuses.items() if not seen.isdisjoint(WAITING)]
    bodies = foreach_bodies(workflow)
    for api in waiting:
        node = nodes.get(api, (0, None))[1]
        if node is None:
            what = (
                f"step [{format_path(api)}] waits in this run, but the workflow has no such step"
                + _positional(api)
            )
            raise WorkflowChanged(run_id, workflow.id, what, api)
        if (api in itemized) != (api in bodies):
            what = f"step [{format_path(api)}] waits in this run " + (
                "in the items of a foreach, but is now a step of its own"
                if api in itemized
                else "as a step of its own, but now runs in the items of a foreach"
            )
            raise WorkflowChanged(run_id, workflow.id, what, api)
        # (A RUNNING one may be a nested workflow whose first step had not begun.)
        if (
            isinstance(node, Workflow)
            and StepStatus.SUSPENDED in statuses[api]
            and not any(len(w) > len(api) and is_prefix(api, w) for w in waiting)
        ):
            what = f"step [{format_path(api)}] waits in this run, but is now a nested workflow"
            raise WorkflowChanged(run_id, workflow.id, what, api)
    _check_order(workflow, (), statuses, run_id, workflow.id)


def _positional(*paths: Path) -> str:
    """A hint for ids that the workflow gave by position (`.sleep()`, `.map()` and blocks
    without an id: "sleep-3"), which change when entries before them come or go."""
    named = [format_path(p) for p in paths if _POSITIONAL.fullmatch(p[-1])]
    if not named:
        return ""
    listed = ", ".join(f"[{n}]" for n in named)
    return f" ({listed}: an id given by position, which changes when entries before it do)"


_POSITIONAL = re.compile(r"(sleep|map|parallel|branch)-[0-9]+")


def _check_order(
    workflow: Workflow,
    prefix: Path,
    statuses: dict[Path, set[StepStatus]],
    run_id: str,
    top: str,
) -> None:
    """In the sequence of `workflow` (at `prefix`), no entry that has run may come after one
    that has not finished; and the same inside every nested workflow that has not."""
    unfinished: tuple[Path, bool] | None = None  # the first such entry, and whether it ran
    for entry in workflow.entries:
        members = [entry] if isinstance(entry, Sleep) else entry_members(entry)
        found = [statuses.get((*prefix, m.id)) for m in members]
        ran = [f for f in found if f]
        if ran and unfinished is not None:
            earlier, started = unfinished
            later = (*prefix, members[found.index(ran[0])].id)
            state = "has not finished" if started else "never ran"
            what = (
                f"step [{format_path(later)}] has run, but [{format_path(earlier)}] now comes"
                f" before it and {state} in this run: steps were added or moved before the"
                " point the run had reached" + _positional(earlier, later)
            )
            raise WorkflowChanged(run_id, top, what, earlier)
        # A branch asks its conditions once: its arms without a record were not chosen.
        counted = ran if isinstance(entry, Branch) else found
        if unfinished is None and not (counted and all(f and f <= FINISHED for f in counted)):
            # Named by its first member that has not finished (one a deploy added to a
            # parallel the run has passed, say), or its first when none ran.
            pending = [
                (m, f)
                for m, f in zip(members, found, strict=True)
                if not (f and f <= FINISHED) and (f or not isinstance(entry, Branch))
            ]
            member, seen = pending[0] if pending else (members[0], None)
            unfinished = ((*prefix, member.id), bool(seen))
        if isinstance(entry, Foreach):
            continue  # its items stand at different points: a sequence each, not checked
        for member, seen in zip(members, found, strict=True):
            if isinstance(member, Workflow) and seen and not seen <= FINISHED:
                _check_order(member, (*prefix, member.id), statuses, run_id, top)


def check_stored_data(workflow: Workflow, snapshot: RunSnapshot, records: Iterable[Path]) -> None:
    """The stored input and suspend payload of each record to resume must pass the step's
    schemas as deployed, as they will when it runs again."""
    nodes = graph(workflow)
    for path in records:
        record = snapshot.steps[path]
        step = nodes[split_items(path)[0]][1]
        assert isinstance(step, Step)
        _check_stored(workflow, snapshot, path, "input", step.input_schema, record.payload)
        if record.suspend_payload is not None:
            payload = record.suspend_payload
            _check_stored(workflow, snapshot, path, "suspend payload", step.suspend_schema, payload)


def check_stored_input(
    workflow: Workflow, snapshot: RunSnapshot, path: Path, node: Step | Workflow
) -> None:
    """A time travel that gives no input runs its target on the stored input: it must pass
    the target's input schema as deployed (each item's, for a foreach)."""
    record = snapshot.steps.get(path)
    if record is None:
        return
    what = "input (give input_data)"
    items = record.payload if path in foreach_bodies(workflow) else [record.payload]
    for item in items if isinstance(items, list) else []:
        _check_stored(workflow, snapshot, path, what, node.input_schema, item)


def _check_stored(
    workflow: Workflow, snapshot: RunSnapshot, path: Path, what: str, model: Any, data: Any
) -> None:
    try:
        schema.parse(model, data)
    except ValidationError as exc:
        found = violations_from(exc, "", data)[:3]
        problems = "; ".join(f"{v.field}: {v.description}" for v in found)
        text = f"the stored {what} of step {shown(path)} fails its schema ({problems})"
        api = split_items(path)[0]
        raise WorkflowChanged(snapshot.run.run_id, workflow.id, text, api) from exc
