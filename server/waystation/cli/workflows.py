"""`waystation workflows`: the registered workflow definitions and their step graphs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated

import typer
from google.protobuf import struct_pb2
from rich.text import Text
from rich.tree import Tree

from waystation.api.v1 import enums_pb2, message_pb2, request_response_pb2
from waystation.cli.client import connect, emit, global_options_note, options
from waystation.cli.render import fields, json_text, stdout, table

NOTE = global_options_note("workflows")
app = typer.Typer(help="Registered workflow definitions.", epilog=NOTE, no_args_is_help=True)

_STEP_SCHEMAS = ("input_schema", "output_schema", "suspend_schema", "resume_schema")


@app.command("list", epilog=NOTE)
def list_workflows(ctx: typer.Context) -> None:
    """List the workflows that the server runs."""
    opts = options(ctx)
    with connect(opts) as stub:
        response = stub.ListWorkflows(
            request_response_pb2.ListWorkflowsRequest(page_size=1000), timeout=opts.timeout
        )
    emit(opts, response, render_workflows)


@app.command("show", epilog=NOTE)
def show_workflow(
    ctx: typer.Context,
    workflow_id: Annotated[str, typer.Argument(metavar="WORKFLOW_ID", help="The workflow's id.")],
) -> None:
    """Show a workflow's step graph, which steps can suspend, and its JSON Schemas."""
    opts = options(ctx)
    with connect(opts) as stub:
        workflow = stub.GetWorkflow(
            request_response_pb2.GetWorkflowRequest(workflow_id=workflow_id), timeout=opts.timeout
        )
    emit(opts, workflow, render_workflow)


def render_workflows(response: request_response_pb2.ListWorkflowsResponse) -> None:
    """A table: id, top-level steps, the steps that can suspend, description."""
    grid = table("workflow", "steps", "can suspend", "description")
    for workflow in response.workflows:
        grid.add_row(
            Text(workflow.workflow_id),
            Text(" -> ".join(node.id for node in workflow.steps)),
            Text(", ".join(suspending_leaves(workflow))),
            Text(workflow.description),
        )
    stdout.print(grid)


def suspending_leaves(workflow: message_pb2.Workflow) -> list[str]:
    """The dotted paths of the steps that may suspend, without the wrappers around them."""
    return [path for path, node in walk(workflow.steps) if node.can_suspend and not node.children]


def render_workflow(workflow: message_pb2.Workflow) -> None:
    """The step graph as a tree, then every JSON Schema of the workflow and its steps."""
    fields([("workflow", workflow.workflow_id), ("description", workflow.description)])
    tree = Tree(Text(workflow.workflow_id, "bold"))
    _add_nodes(tree, workflow.steps)
    stdout.print(tree, soft_wrap=False)
    names = ("input_schema", "output_schema", "state_schema")
    _schemas("workflow", [(name, getattr(workflow, name)) for name in names])
    for path, node in walk(workflow.steps):
        _schemas(f"step {path}", [(name, getattr(node, name)) for name in _STEP_SCHEMAS])


_NAMED = (enums_pb2.STEP_KIND_STEP, enums_pb2.STEP_KIND_WORKFLOW)
"""The nodes a path names; the blocks around them (parallel, branch, loops, foreach) add no
segment to it (DESIGN.md §4: a parallel branch `a` is resumed as `a`)."""


def walk(
    nodes: Iterable[message_pb2.StepNode], prefix: str = ""
) -> Iterator[tuple[str, message_pb2.StepNode]]:
    """Every step and nested workflow of a step graph, depth first, with the dotted path
    that `runs resume --step` takes."""
    for node in nodes:
        if node.kind not in _NAMED:
            yield from walk(node.children, prefix)
            continue
        path = f"{prefix}{node.id}"
        yield path, node
        yield from walk(node.children, f"{path}.")


def _add_nodes(tree: Tree, nodes: Iterable[message_pb2.StepNode]) -> None:
    for node in nodes:
        _add_nodes(tree.add(_node_label(node)), node.children)


def _node_label(node: message_pb2.StepNode) -> Text:
    kind = enums_pb2.StepKind.Name(node.kind).removeprefix("STEP_KIND_").lower()
    label = Text.assemble((node.id, "bold"), f"  {kind}")
    if node.can_suspend:
        label.append("  (can suspend)", "yellow")
    if node.retries:
        label.append(f"  retries={node.retries}")
    if node.description:
        label.append(f"  {node.description}", "dim")
    return label


def _schemas(title: str, schemas: list[tuple[str, struct_pb2.Struct]]) -> None:
    shown = [(name, schema) for name, schema in schemas if schema.fields]
    if not shown:
        return
    stdout.print(Text(f"\n{title}", "bold"))
    for name, schema in shown:
        kind = name.removesuffix("_schema")
        stdout.print(Text(f"  {kind}: {json_text(schema)}"))
