"""Workflow definitions as the API shows them: the step graph with JSON Schemas."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

from waystation.api.v1 import enums_pb2, message_pb2
from waystation.engine import Step, Workflow
from waystation.engine.schema import json_schema

_KIND = {"step": enums_pb2.STEP_KIND_STEP, "workflow": enums_pb2.STEP_KIND_WORKFLOW}


def _schema(model: Any, out: struct_pb2.Struct) -> None:
    document = json_schema(model)
    if document is not None:
        json_format.ParseDict(document, out)


def node_to_proto(node: Step | Workflow) -> message_pb2.StepNode:
    out = message_pb2.StepNode(
        id=node.id,
        kind=_KIND[node.kind],
        description=node.description,
        can_suspend=node.can_suspend,
        retries=node.retries or 0,
    )
    _schema(node.input_schema, out.input_schema)
    _schema(node.output_schema, out.output_schema)
    _schema(node.suspend_schema, out.suspend_schema)
    _schema(node.resume_schema, out.resume_schema)
    if isinstance(node, Workflow):
        out.children.extend(node_to_proto(child) for child in node.entries)
    return out


def workflow_to_proto(workflow: Workflow) -> message_pb2.Workflow:
    out = message_pb2.Workflow(workflow_id=workflow.id, description=workflow.description)
    _schema(workflow.input_schema, out.input_schema)
    _schema(workflow.output_schema, out.output_schema)
    _schema(workflow.state_schema, out.state_schema)
    out.steps.extend(node_to_proto(entry) for entry in workflow.entries)
    return out
