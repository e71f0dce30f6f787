"""Time travel: which records a re-execution from a named step keeps, rewrites and drops.

Pure functions over a workflow and a snapshot, like the resume rules: the steps before the
target keep their records untouched; the target runs again (with new input, or with resume
data when it was suspended); everything after it, and inside it, is dropped and runs anew.
"""

from __future__ import annotations

from waystation.engine.commands import TimeTravelCommand
from waystation.engine.definition import Step, Workflow
from waystation.engine.errors import InvalidArgument, StepNotSuspended
from waystation.engine.model import JSON, RunSnapshot, StepRecord, StepStatus, evolve, now
from waystation.engine.paths import ITEM_MARK, Path, is_prefix, split_items
from waystation.engine.result import graph


def plan(
    workflow: Workflow, snapshot: RunSnapshot, cmd: TimeTravelCommand, resume_data: JSON
) -> tuple[dict[Path, StepRecord], list[Path]]:
    """The records to write and the record paths (with everything below them) to drop."""
    target = cmd.step
    nodes = graph(workflow)  # every node by path, with its position in graph order
    position, node = nodes.get(target, (len(nodes), None))
    if not target or not isinstance(node, Step | Workflow) or any(ITEM_MARK in s for s in target):
        raise InvalidArgument("step", f"no step [{'.'.join(target)}] in {workflow.id!r}")
    ancestors = {target[:d] for d in range(1, len(target))}
    dropped = [
        path
        for path in snapshot.steps
        if path not in ancestors
        and (
            nodes.get(split_items(path)[0], (len(nodes), None))[0] >= position
            or is_prefix(target, split_items(path)[0])
        )
    ]
    writes = {
        a: evolve(snapshot.steps[a], status=StepStatus.RUNNING, error=None)
        for a in ancestors
        if a in snapshot.steps
    }
    writes[target] = _target_record(snapshot, cmd, resume_data)
    return writes, dropped


def _target_record(snapshot: RunSnapshot, cmd: TimeTravelCommand, data: JSON) -> StepRecord:
    old = snapshot.steps.get(cmd.step)
    if cmd.resume_data is not None:
        if old is None or old.status is not StepStatus.SUSPENDED:
            raise StepNotSuspended(snapshot.run.run_id, cmd.step, [])
        payload = cmd.input_data if cmd.input_data is not None else old.payload
        return evolve(old, payload=payload).resumed(data, 0)
    if cmd.input_data is None and old is None:
        raise InvalidArgument("input_data", "the step never ran here: give its input")
    payload = cmd.input_data if cmd.input_data is not None else old.payload  # type: ignore[union-attr]
    return StepRecord(StepStatus.RUNNING, payload=payload, started_at=now())
