"""Workflow definitions as the API shows them: the step graph with JSON Schemas."""

from __future__ import annotations

import weakref
from typing import Any

from google.protobuf import json_format, struct_pb2

from waystation.api.v1 import enums_pb2, message_pb2
from waystation.engine import Step, Workflow
from waystation.engine.definition import Branch, Entry, Foreach, Loop, Parallel, Sleep
from waystation.engine.schema import json_schema


def _schema(model: Any, out: struct_pb2.Struct, sent: bool = False) -> None:
    """`out` := the model's JSON Schema: of what a client sends it (validation), or, when
    `sent`, of what the server sends (serialization: aliases and computed fields as the
    answers carry them)."""
    document = json_schema(model, "serialization" if sent else "validation")
    if document is not None:
        json_format.ParseDict(document, out)


def step_to_proto(node: Step | Workflow) -> message_pb2.StepNode:
    kind = {
        "workflow": enums_pb2.STEP_KIND_WORKFLOW,
        "map": enums_pb2.STEP_KIND_MAP,
    }.get(node.kind, enums_pb2.STEP_KIND_STEP)
    out = message_pb2.StepNode(
        id=node.id,
        kind=kind,
        description=node.description,
        can_suspend=node.can_suspend,
        retries=node.retries or 0,
    )
    _schema(node.input_schema, out.input_schema)
    _schema(node.output_schema, out.output_schema, sent=True)
    _schema(node.suspend_schema, out.suspend_schema, sent=True)
    _schema(node.resume_schema, out.resume_schema)
    if isinstance(node, Workflow):
        out.children.extend(entry_to_proto(child) for child in node.entries)
    return out


def entry_to_proto(entry: Entry) -> message_pb2.StepNode:
    """One entry of a workflow's sequence: a step, or a block with its members as children."""
    if isinstance(entry, Step | Workflow):
        return step_to_proto(entry)
    if isinstance(entry, Sleep):
        kind = enums_pb2.STEP_KIND_SLEEP if entry.until is None else enums_pb2.STEP_KIND_SLEEP_UNTIL
        return message_pb2.StepNode(id=entry.id, kind=kind)
    kinds = {
        Parallel: enums_pb2.STEP_KIND_PARALLEL,
        Branch: enums_pb2.STEP_KIND_BRANCH,
        Foreach: enums_pb2.STEP_KIND_FOREACH,
    }
    if isinstance(entry, Loop):
        kind = enums_pb2.STEP_KIND_DOUNTIL if entry.until else enums_pb2.STEP_KIND_DOWHILE
    else:
        kind = kinds[type(entry)]
    members = [step_to_proto(m) for m in entry.members]
    return message_pb2.StepNode(
        id=entry.id,
        kind=kind,
        can_suspend=any(m.can_suspend for m in members),
        children=members,
    )


_RENDERED: weakref.WeakKeyDictionary[Workflow, message_pb2.Workflow] = weakref.WeakKeyDictionary()


def workflow_to_proto(workflow: Workflow) -> message_pb2.Workflow:
    """The workflow as the API shows it, rendered once: a committed workflow never changes,
    and rendering its JSON Schemas takes milliseconds. Callers must not modify the message
    (a response that embeds it copies it)."""
    out = _RENDERED.get(workflow)
    if out is None:
        out = _RENDERED[workflow] = _render(workflow)
    return out


def _render(workflow: Workflow) -> message_pb2.Workflow:
    out = message_pb2.Workflow(workflow_id=workflow.id, description=workflow.description)
    _schema(workflow.input_schema, out.input_schema)
    _schema(workflow.output_schema, out.output_schema, sent=True)
    _schema(workflow.state_schema, out.state_schema)
    out.steps.extend(entry_to_proto(entry) for entry in workflow.entries)
    return out
