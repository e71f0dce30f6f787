"""`waystation runs`: list, show, start, resume, cancel, watch, restart, time-travel and
delete runs."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.text import Text

from waystation.api.v1 import message_pb2, request_response_pb2
from waystation.cli.client import (
    ClientOptions,
    connect,
    emit,
    global_options_note,
    json_text,
    options,
)
from waystation.cli.errors import settling_hint, stderr
from waystation.cli.inputs import json_object, json_value, run_status, status_names, step_path
from waystation.cli.render import render_event, render_result, render_run, render_runs, stdout

NOTE = global_options_note("runs")
app = typer.Typer(
    help="Start, resume, watch, inspect and cancel runs.", epilog=NOTE, no_args_is_help=True
)

RunId = Annotated[str, typer.Argument(metavar="RUN_ID", help="The run's id.")]
Data = Annotated[
    str | None,
    typer.Option(
        "--data", metavar="JSON", help="JSON text, or @path to a JSON file (@- for stdin)."
    ),
]
Context = Annotated[
    str | None,
    typer.Option(
        "--context", metavar="JSON", help="Request context: a JSON object, or @path to one."
    ),
]
RequestId = Annotated[
    str,
    typer.Option(
        "--request-id", metavar="ID", help="Idempotency key: a repeat returns the first outcome."
    ),
]

OUTPUT = message_pb2.OutputOptions(include_resume_labels=True)
"""What every WorkflowResult the CLI asks for carries: the labels `runs resume --label` takes."""


@app.command("list", epilog=NOTE)
def list_runs(
    ctx: typer.Context,
    workflow: Annotated[
        str, typer.Option("--workflow", metavar="WORKFLOW_ID", help="Only runs of this workflow.")
    ] = "",
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            help=f"Only runs with this status (repeatable): {', '.join(status_names())}.",
        ),
    ] = None,
    resource: Annotated[
        str, typer.Option("--resource", metavar="RESOURCE", help="Only runs of this resource.")
    ] = "",
    page_size: Annotated[
        int, typer.Option("--page-size", metavar="N", min=0, help="Runs per page.")
    ] = 0,
    page_token: Annotated[
        str, typer.Option("--page-token", metavar="TOKEN", help="Token of the next page.")
    ] = "",
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


@app.command("show", epilog=NOTE)
def show_run(ctx: typer.Context, run_id: RunId) -> None:
    """Show a run and its latest result."""
    opts = options(ctx)
    with connect(opts) as stub:
        request = request_response_pb2.GetRunRequest(run_id=run_id, output_options=OUTPUT)
        run = stub.GetRun(request, timeout=opts.timeout)
    emit(opts, run, render_run)


@app.command("start", epilog=NOTE)
def start_run(
    ctx: typer.Context,
    workflow_id: Annotated[str, typer.Argument(metavar="WORKFLOW_ID", help="The workflow to run.")],
    data: Data = None,
    run_id: Annotated[
        str, typer.Option("--run-id", metavar="RUN_ID", help="Choose the run's id.")
    ] = "",
    resource: Annotated[
        str, typer.Option("--resource", metavar="RESOURCE", help="The run's resource.")
    ] = "",
    state: Annotated[
        str | None,
        typer.Option("--state", metavar="JSON", help="Initial state: a JSON object, or @path."),
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
        output_options=OUTPUT,
    )
    opts = options(ctx)
    hint = settling_hint(run_id=run_id, request_id=request_id, workflow_id=workflow_id)
    with connect(opts, hint) as stub:
        result = stub.StartRun(request, timeout=opts.timeout)
    emit(opts, result, render_result)


@app.command("resume", epilog=NOTE)
def resume_run(
    ctx: typer.Context,
    run_id: RunId,
    data: Data = None,
    step: Annotated[
        str | None,
        typer.Option(
            "--step", metavar="PATH", help="The suspended step's path, e.g. review.decide."
        ),
    ] = None,
    label: Annotated[
        str, typer.Option("--label", metavar="LABEL", help="A resume label, instead of --step.")
    ] = "",
    foreach_index: Annotated[
        int | None,
        typer.Option("--foreach-index", metavar="N", min=0, help="Inside a foreach: the item."),
    ] = None,
    context: Context = None,
    request_id: RequestId = "",
    validate_only: Annotated[
        bool, typer.Option("--validate-only", help="Check everything, change nothing.")
    ] = False,
    expected_version: Annotated[
        int | None,
        typer.Option(
            "--expected-version", metavar="VERSION", help="Fail unless the run has this version."
        ),
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
        output_options=OUTPUT,
    )
    opts = options(ctx)
    with connect(opts, settling_hint(run_id=run_id, request_id=request_id)) as stub:
        result = stub.ResumeRun(request, timeout=opts.timeout)
    emit(opts, result, render_result)


@app.command("cancel", epilog=NOTE)
def cancel_run(
    ctx: typer.Context,
    run_id: RunId,
    reason: Annotated[
        str, typer.Option("--reason", metavar="TEXT", help="Why; stored in the run's error.")
    ] = "",
) -> None:
    """Cancel a run (a no-op on a finished run)."""
    request = request_response_pb2.CancelRunRequest(run_id=run_id, reason=reason)
    opts = options(ctx)
    with connect(opts) as stub:
        run = stub.CancelRun(request, timeout=opts.timeout)
    emit(opts, run, render_run)


@app.command("watch", epilog=NOTE)
def watch_run(
    ctx: typer.Context,
    run_id: RunId,
    after: Annotated[
        int,
        typer.Option(
            "--after",
            metavar="SEQUENCE",
            min=0,
            help="Only events after this sequence (to pick up again).",
        ),
    ] = 0,
) -> None:
    """Print a run's events as they happen, stored ones first, until the run is final.

    One line per event: sequence, time, event type, step (`[i]` for a foreach item) and the
    run's status; with the global --json (`waystation --json runs watch RUN_ID`), one JSON
    object per line. The stream has no deadline (the global --timeout does not apply): it
    ends, with exit code 0, when the run succeeds, fails or is canceled; a suspended or
    sleeping run is watched until it finishes.
    """
    opts = options(ctx)
    request = request_response_pb2.WatchRunRequest(run_id=run_id, after_sequence=after)
    last = after
    try:
        with connect(opts) as stub:
            for event in stub.WatchRun(request):
                _show_event(opts, event)
                last = event.sequence
    except typer.Exit:
        if last > after:
            stderr.print(Text(f"  Pick up where this watch stopped with --after {last}."))
        raise


def _show_event(opts: ClientOptions, event: message_pb2.RunEvent) -> None:
    if opts.as_json:  # JSON Lines: one event per line, written as it arrives
        sys.stdout.write(json_text(event, indent=None) + "\n")
        sys.stdout.flush()
    else:
        render_event(event)


@app.command("restart", epilog=NOTE)
def restart_run(
    ctx: typer.Context,
    run_id: RunId,
    context: Context = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Take the run over although its replica's lease has not expired."
        ),
    ] = False,
) -> None:
    """Continue a run left RUNNING by a process that died (a replica's), from its last
    committed step, and wait until it settles. A server continues its own interrupted runs
    when it starts; this is for a run that no live process drives. A run another replica
    still holds a lease on is refused unless --force (only if you know that replica is
    dead: a live one would lose the run mid-step)."""
    request = request_response_pb2.RestartRunRequest(
        run_id=run_id,
        request_context=json_object(context, "--context"),
        output_options=OUTPUT,
        force=force,
    )
    opts = options(ctx)
    with connect(opts, settling_hint(run_id=run_id)) as stub:
        result = stub.RestartRun(request, timeout=opts.timeout)
    emit(opts, result, render_result)


@app.command("time-travel", epilog=NOTE)
def time_travel_run(
    ctx: typer.Context,
    run_id: RunId,
    step: Annotated[
        str,
        typer.Option(
            "--step", metavar="PATH", help="The step to run again, by path, e.g. review.decide."
        ),
    ],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            metavar="JSON",
            help="The step's new input: JSON, or @path (default: as stored).",
        ),
    ] = None,
    resume_data: Annotated[
        str | None,
        typer.Option(
            "--resume-data",
            metavar="JSON",
            help="Resume data for a suspended step: JSON, or @path.",
        ),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option("--state", metavar="JSON", help="Replace the state: a JSON object, or @path."),
    ] = None,
    context: Context = None,
) -> None:
    """Run a settled run again from a step, keeping the results of the steps before it, and
    wait until it settles."""
    request = request_response_pb2.TimeTravelRunRequest(
        run_id=run_id,
        step=step_path(step),
        input_data=json_value(data, "--data"),
        resume_data=json_value(resume_data, "--resume-data"),
        initial_state=json_object(state, "--state"),
        request_context=json_object(context, "--context"),
        output_options=OUTPUT,
    )
    opts = options(ctx)
    with connect(opts, settling_hint(run_id=run_id)) as stub:
        result = stub.TimeTravelRun(request, timeout=opts.timeout)
    emit(opts, result, render_result)


@app.command("delete", epilog=NOTE)
def delete_run(ctx: typer.Context, run_id: RunId) -> None:
    """Delete a run and its history (a running run must be canceled first)."""
    opts = options(ctx)
    with connect(opts) as stub:
        response = stub.DeleteRun(
            request_response_pb2.DeleteRunRequest(run_id=run_id), timeout=opts.timeout
        )
    emit(opts, response, lambda _: stdout.print(Text(f"deleted {run_id}")))
