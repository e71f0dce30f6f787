"""The WorkflowResult of a run, built from its header and step records.

Steps are listed in the order of the workflow's graph (depth first, nested steps after their
wrapper); foreach items are folded into their step's result. `suspended` lists every
suspended leaf, nested ones included, as the API names it (item marks removed).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from waystation.engine.definition import Foreach, Sleep, Step, Workflow, entry_members
from waystation.engine.model import JSON, LabelTarget, RunRecord, RunStatus, StepRecord, StepStatus
from waystation.engine.paths import ITEM_MARK, Path, format_path, item_indices, split_items

Node = Step | Workflow | Sleep


def walk(workflow: Workflow, prefix: Path = ()) -> Iterator[tuple[Path, Node]]:
    """Every node that owns a record, with its path, depth first."""
    for entry in workflow.entries:
        members: list[Node] = [entry] if isinstance(entry, Sleep) else []
        members += [] if isinstance(entry, Sleep) else entry_members(entry)
        for node in members:
            path = (*prefix, node.id)
            yield path, node
            if isinstance(node, Workflow):
                yield from walk(node, path)


def graph(workflow: Workflow) -> dict[Path, tuple[int, Node]]:
    """What `walk` yields, by path, with each node's position in that order. A committed
    workflow cannot change, so its graph is walked once (every settle and every resume looks
    nodes up in it); one still being built is walked again on each call."""
    if not workflow.committed:
        return {path: (i, node) for i, (path, node) in enumerate(walk(workflow))}
    found = _GRAPHS.get(workflow)
    if found is None:
        found = _GRAPHS[workflow] = {p: (i, n) for i, (p, n) in enumerate(walk(workflow))}
    return found


_GRAPHS: weakref.WeakKeyDictionary[Workflow, dict[Path, tuple[int, Node]]] = (
    weakref.WeakKeyDictionary()
)


def find(workflow: Workflow, path: Path) -> Node | None:
    """The node at `path` (an API path, without item marks), or None."""
    if workflow.committed and path:
        entry = graph(workflow).get(path)
        return entry[1] if entry is not None else None
    node: Node = workflow
    for segment in path:
        if not isinstance(node, Workflow):
            return None
        child: Node | None = node.child(segment)
        if child is None:
            child = next(
                (e for e in node.entries if isinstance(e, Sleep) and e.id == segment), None
            )
        if child is None:
            return None
        node = child
    return node


def foreach_bodies(workflow: Workflow) -> frozenset[Path]:
    """The paths of every foreach's body (it runs once per item), nested ones too; found
    once for a committed workflow, as its graph is."""
    found = _BODIES.get(workflow)
    if found is None:
        found = frozenset(_bodies(workflow, ()))
        if workflow.committed:
            _BODIES[workflow] = found
    return found


def _bodies(workflow: Workflow, prefix: Path) -> Iterator[Path]:
    for entry in workflow.entries:
        if isinstance(entry, Foreach):
            yield (*prefix, entry.body.id)
        for node in [] if isinstance(entry, Sleep) else entry_members(entry):
            if isinstance(node, Workflow):
                yield from _bodies(node, (*prefix, node.id))


_BODIES: weakref.WeakKeyDictionary[Workflow, frozenset[Path]] = weakref.WeakKeyDictionary()


def suspended_records(workflow: Workflow, steps: dict[Path, StepRecord]) -> list[Path]:
    """Record paths of the suspended leaf steps, in graph order (then by item index)."""
    nodes = graph(workflow)
    found = []
    for path, record in steps.items():
        if record.status is not StepStatus.SUSPENDED or "count" in record.metadata:
            continue  # a foreach's aggregate record is not a leaf: its items are
        entry = nodes.get(split_items(path)[0])
        if entry is not None and isinstance(entry[1], Step):
            found.append((entry[0], item_indices(path), path))
    return [path for *_, path in sorted(found)]


def suspended_leaves(workflow: Workflow, steps: dict[Path, StepRecord]) -> list[Path]:
    """The suspended leaves as the API names them (one path for all items of a foreach)."""
    out: list[Path] = []
    for path in suspended_records(workflow, steps):
        api = split_items(path)[0]
        if api not in out:
            out.append(api)
    return out


@dataclass
class WorkflowResultData:
    """The domain form of the API's WorkflowResult."""

    run_id: str
    workflow_id: str
    status: RunStatus
    version: int
    input: JSON = None
    result: JSON = None
    error: dict[str, Any] | None = None
    steps: dict[str, StepRecord] = field(default_factory=dict)
    items: dict[str, dict[tuple[int, ...], StepRecord]] = field(default_factory=dict)
    """The records of steps that run in foreach items, by step and item: (i,) for item i of
    the foreach around the step, (i, j) for item j of a foreach inside item i of another."""
    suspended: list[Path] = field(default_factory=list)
    suspend_payload: dict[str, JSON] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    resume_labels: dict[str, LabelTarget] = field(default_factory=dict)
    trace_id: str = ""
    span_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow_id": self.workflow_id,
            "status": self.status.value,
            "version": self.version,
            "input": self.input,
            "result": self.result,
            "error": self.error,
            "steps": {k: v.to_json() for k, v in self.steps.items()},
            "items": {
                k: {_index_key(i): r.to_json() for i, r in v.items()} for k, v in self.items.items()
            },
            "suspended": [list(p) for p in self.suspended],
            "suspend_payload": self.suspend_payload,
            "state": self.state,
            "resume_labels": {k: v.to_json() for k, v in self.resume_labels.items()},
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkflowResultData:
        return cls(
            **{
                **data,
                "status": RunStatus(data["status"]),
                "steps": {k: StepRecord.from_json(v) for k, v in data["steps"].items()},
                "items": {
                    k: {_indices_of(i): StepRecord.from_json(r) for i, r in v.items()}
                    for k, v in data.get("items", {}).items()
                },
                "suspended": [tuple(p) for p in data["suspended"]],
                "resume_labels": {
                    k: LabelTarget.from_json(v) for k, v in data["resume_labels"].items()
                },
            }
        )


def build_result(
    workflow: Workflow | None, run: RunRecord, steps: dict[Path, StepRecord]
) -> WorkflowResultData:
    """The result of `run` as it stands. `workflow` is None when the run's workflow is no
    longer registered: steps are then listed in stored order."""
    order = list(graph(workflow)) if workflow else []
    known = set(order)
    order += sorted((p for p in steps if p not in known and not _is_item(p)), key=format_path)
    items: dict[str, dict[tuple[int, ...], StepRecord]] = {}
    for path, record in steps.items():
        if _is_item(path):  # a foreach item, or a step inside one's nested workflow
            items.setdefault(format_path(split_items(path)[0]), {})[item_indices(path)] = record
    for tree in items.values():
        _fill_gaps(tree)
    listed = {}
    for path in order:
        key = format_path(path)
        if path in steps:
            listed[key] = steps[path]
        elif key in items:  # a step of a foreach's nested body: one record per item
            listed[key] = _gathered(r for i, r in items[key].items() if len(i) == 1)
    records = suspended_records(workflow, steps) if workflow else _stored_suspended(steps)
    if run.status not in (RunStatus.SUSPENDED, RunStatus.WAITING):
        records = []  # (WAITING: suspended beside a branch that sleeps, and resumable)
    payloads: dict[str, JSON] = {}
    suspended: list[Path] = []
    for path in records:
        api = split_items(path)[0]
        if api not in suspended:
            suspended.append(api)
            payload = steps[path].suspend_payload
            # `suspend()` without a payload lists {} (as Mastra's `suspendPayload` does)
            payloads[format_path(api)] = {} if payload is None else payload
    return WorkflowResultData(
        run_id=run.run_id,
        workflow_id=run.workflow_id,
        status=run.status,
        version=run.version,
        input=run.input,
        result=run.result,
        error=run.error,
        steps=listed,
        items=items,
        suspended=suspended,
        suspend_payload=payloads,
        state=run.state,
        resume_labels=dict(run.resume_labels),
        trace_id=run.trace.get("trace_id", ""),
        span_id=run.trace.get("span_id", ""),
    )


_MOST_TELLING = (
    StepStatus.SUSPENDED,
    StepStatus.RUNNING,
    StepStatus.WAITING,
    StepStatus.FAILED,
    StepStatus.CANCELED,
    StepStatus.SUCCESS,
)


def _gathered(records: Iterable[StepRecord]) -> StepRecord:
    """The listing of a step inside a foreach's nested body, which has a record per item
    (its `items`) and none of its own: the status that tells most of them (suspended, then
    running, waiting, failed, canceled, succeeded)."""
    statuses = {record.status for record in records}
    return StepRecord(next((s for s in _MOST_TELLING if s in statuses), StepStatus.SKIPPED))


def _fill_gaps(tree: dict[tuple[int, ...], StepRecord]) -> None:
    """Give every item of an outer foreach a listing of its own where the step has no record
    there (a foreach inside a nested workflow inside the item): its items' telling status."""
    missing = {i[:depth] for i in tree for depth in range(1, len(i))} - tree.keys()
    for outer in sorted(missing, key=len, reverse=True):
        tree[outer] = _gathered(r for i, r in tree.items() if i[: len(outer)] == outer)


def _index_key(indices: tuple[int, ...]) -> str:
    return ".".join(map(str, indices))


def _indices_of(key: str) -> tuple[int, ...]:
    """`_index_key`'s inverse; results stored before items could nest have one index."""
    return tuple(int(i) for i in key.split("."))


def _is_item(path: Path) -> bool:
    return any(ITEM_MARK in segment for segment in path)


def _stored_suspended(steps: dict[Path, StepRecord]) -> list[Path]:
    """Without the workflow's graph, every suspended record counts as a leaf."""
    return [p for p, r in steps.items() if r.status is StepStatus.SUSPENDED]
