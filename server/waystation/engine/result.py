"""The WorkflowResult of a run, built from its header and step records.

Steps are listed in the order of the workflow's graph (depth first, nested steps after their
wrapper); `suspended` lists every suspended leaf, nested ones included.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from waystation.engine.definition import Step, Workflow
from waystation.engine.model import JSON, LabelTarget, RunRecord, RunStatus, StepRecord, StepStatus
from waystation.engine.paths import Path, format_path, parse_path


def walk(workflow: Workflow, prefix: Path = ()) -> Iterator[tuple[Path, Step | Workflow]]:
    """Every node of the graph with its path, depth first."""
    for entry in workflow.entries:
        path = (*prefix, entry.id)
        yield path, entry
        if isinstance(entry, Workflow):
            yield from walk(entry, path)


def find(workflow: Workflow, path: Path) -> Step | Workflow | None:
    """The node at `path`, or None when the graph has no such path."""
    node: Step | Workflow = workflow
    for segment in path:
        if not isinstance(node, Workflow):
            return None
        child = node.child(segment)
        if child is None:
            return None
        node = child
    return node


def suspended_leaves(workflow: Workflow, steps: dict[Path, StepRecord]) -> list[Path]:
    """Paths of the suspended steps that are not nested-workflow wrappers, in graph order."""
    return [
        path
        for path, node in walk(workflow)
        if isinstance(node, Step)
        and (rec := steps.get(path)) is not None
        and rec.status is StepStatus.SUSPENDED
    ]


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
    order = [p for p, _ in walk(workflow)] if workflow else []
    known = set(order)
    order += sorted((p for p in steps if p not in known), key=format_path)
    listed = {format_path(p): steps[p] for p in order if p in steps}
    if workflow is not None:
        suspended = suspended_leaves(workflow, steps)
    else:
        suspended = [parse_path(k) for k, r in listed.items() if r.status is StepStatus.SUSPENDED]
    if run.status is not RunStatus.SUSPENDED:
        suspended = []
    return WorkflowResultData(
        run_id=run.run_id,
        workflow_id=run.workflow_id,
        status=run.status,
        version=run.version,
        input=run.input,
        result=run.result,
        error=run.error,
        steps=listed,
        suspended=suspended,
        suspend_payload={format_path(p): steps[p].suspend_payload for p in suspended},
        state=run.state,
        resume_labels=dict(run.resume_labels),
        trace_id=run.trace.get("trace_id", ""),
    )
