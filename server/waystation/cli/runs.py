"""`waystation runs`: list, show, start, resume and cancel runs."""

from __future__ import annotations

from typing import Annotated

import typer

from waystation.api.v1 import request_response_pb2
from waystation.cli.client import connect, emit, options
from waystation.cli.inputs import json_object, json_value, run_status, status_names, step_path
from waystation.cli.render import render_result, render_run, render_runs

app = typer.Typer(help="Start, resume, inspect and cancel runs.", no_args_is_help=True)

RunId = Annotated[str, typer.Argument(metavar="RUN_ID", help="The run's id.")]
Data = Annotated[
    str | None, typer.Option("--data", help="JSON text, or @path to a JSON file (@- for stdin).")
]
Context = Annotated[
    str | None,
    typer.Option("--context", help="Request context: a JSON object, or @path to one."),
]
RequestId = Annotated[
    str, typer.Option("--request-id", help="Idempotency key: a repeat returns the first outcome.")
]


@app.command("list")
def list_runs(
    ctx: typer.Context,
    workflow: Annotated[str, typer.Option("--workflow", help="Only runs of this workflow.")] = "",
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status", help=f"Only runs with this status (repeatable): {status_names()}."
        ),
    ] = None,
    resource: Annotated[str, typer.Option("--resource", help="Only runs of this resource.")] = "",
    page_size: Annotated[int, typer.Option("--page-size", min=0, help="Runs per page.")] = 0,
    page_token: Annotated[str, typer.Option("--page-token", help="Token of the next page.")] = "",
) -> None:
    """List runs, newest first."""
    request = request_response_pb2.ListRunsRequest(
        workflow_id=workflow,
        statuses=[run_status(name) for name in status or []],
        resource_id=resource,
        page_size=page_size,
        page_token=page_token,
    )
    opts = options(ctx)
    with connect(opts) as stub:
        response = stub.ListRuns(request, timeout=opts.timeout)
    emit(opts, response, render_runs)


@app.command("show")
def show_run(ctx: typer.Context, run_id: RunId) -> None:
    """Show a run and its latest result."""
    opts = options(ctx)
    with connect(opts) as stub:
        run = stub.GetRun(request_response_pb2.GetRunRequest(run_id=run_id), timeout=opts.timeout)
    emit(opts, run, render_run)


@app.command("start")
def start_run(
    ctx: typer.Context,
    workflow_id: Annotated[str, typer.Argument(metavar="WORKFLOW_ID", help="The workflow to run.")],
    data: Data = None,
    run_id: Annotated[str, typer.Option("--run-id", help="Choose the run's id.")] = "",
    resource: Annotated[str, typer.Option("--resource", help="The run's resource.")] = "",
    state: Annotated[
        str | None, typer.Option("--state", help="Initial state: a JSON object, or @path.")
    ] = None,
    context: Context = None,
    request_id: RequestId = "",
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Return once started instead of when settled.")
    ] = False,
) -> None:
    """Start a run and wait until it settles (succeeds, fails, suspends, ...)."""
    request = request_response_pb2.StartRunRequest(
        workflow_id=workflow_id,
        run_id=run_id,
        resource_id=resource,
        input_data=json_value(data, "--data"),
        initial_state=json_object(state, "--state"),
        request_context=json_object(context, "--context"),
        request_id=request_id,
        return_immediately=no_wait,
    )
    opts = options(ctx)
    with connect(opts) as stub:
        result = stub.StartRun(request, timeout=opts.timeout)
    emit(opts, result, render_result)


@app.command("resume")
def resume_run(
    ctx: typer.Context,
    run_id: RunId,
    data: Data = None,
    step: Annotated[
        str | None, typer.Option("--step", help="The suspended step's path, e.g. review.decide.")
    ] = None,
    label: Annotated[str, typer.Option("--label", help="A resume label, instead of --step.")] = "",
    foreach_index: Annotated[
        int | None, typer.Option("--foreach-index", min=0, help="Inside a foreach: the item.")
    ] = None,
    context: Context = None,
    request_id: RequestId = "",
    validate_only: Annotated[
        bool, typer.Option("--validate-only", help="Check everything, change nothing.")
    ] = False,
    expected_version: Annotated[
        int | None, typer.Option("--expected-version", help="Fail unless the run has this version.")
    ] = None,
) -> None:
    """Resume a suspended step with data and wait until the run settles again."""
    request = request_response_pb2.ResumeRequest(
        run_id=run_id,
        resume_data=json_value(data, "--data"),
        step=step_path(step),
        label=label,
        foreach_index=foreach_index,
        request_context=json_object(context, "--context"),
        request_id=request_id,
        validate_only=validate_only,
        expected_version=expected_version,
    )
    opts = options(ctx)
    with connect(opts) as stub:
        result = stub.ResumeRun(request, timeout=opts.timeout)
    emit(opts, result, render_result)


@app.command("cancel")
def cancel_run(
    ctx: typer.Context,
    run_id: RunId,
    reason: Annotated[str, typer.Option("--reason", help="Why; stored in the run's error.")] = "",
) -> None:
    """Cancel a run (a no-op on a finished run)."""
    request = request_response_pb2.CancelRunRequest(run_id=run_id, reason=reason)
    opts = options(ctx)
    with connect(opts) as stub:
        run = stub.CancelRun(request, timeout=opts.timeout)
    emit(opts, run, render_run)
