"""Responses for people: run results, runs, run lists and run events as rich text and tables.

User data is printed as compact JSON inside `Text`, never as console markup, so that a
payload containing `[bold]` prints as it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from rich.console import Console
from rich.table import Table
from rich.text import Text

from waystation.api.v1 import enums_pb2, message_pb2, request_response_pb2
from waystation.engine.schema import whole_numbers

stdout = Console(highlight=False, soft_wrap=True)


def dotted(path: message_pb2.StepPath) -> str:
    """The text form of a step path: segments joined with `.`."""
    return ".".join(path.segments)


def run_status_name(status: enums_pb2.RunStatus.ValueType) -> str:
    """`suspended` for RUN_STATUS_SUSPENDED."""
    return enums_pb2.RunStatus.Name(status).removeprefix("RUN_STATUS_").lower()


def step_status_name(status: enums_pb2.StepStatus.ValueType) -> str:
    """`success` for STEP_STATUS_SUCCESS."""
    return enums_pb2.StepStatus.Name(status).removeprefix("STEP_STATUS_").lower()


def json_text(value: struct_pb2.Value | struct_pb2.Struct) -> str:
    """Compact JSON of a `Value` or `Struct`, keys sorted (a Struct is a map: its order
    changes from one answer to the next); whole numbers print without `.0`."""
    data = whole_numbers(json_format.MessageToDict(value))
    return json.dumps(data, ensure_ascii=False, separators=(", ", ": "), sort_keys=True)


def precise_timestamp(ts: timestamp_pb2.Timestamp) -> str:
    """A UTC time to the millisecond, or an empty string for an unset timestamp."""
    if not ts.seconds and not ts.nanos:
        return ""
    moment = ts.ToDatetime(tzinfo=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def timestamp(ts: timestamp_pb2.Timestamp) -> str:
    """A UTC time to the second, or an empty string for an unset timestamp."""
    if not ts.seconds and not ts.nanos:
        return ""
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def table(*columns: str, title: str | None = None) -> Table:
    """A table whose cells fold instead of being cut off: ids must stay whole."""
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column, overflow="fold")
    return grid


def fields(rows: Iterable[tuple[str, str]]) -> None:
    """Print `name  value` lines, names aligned, skipping empty values."""
    shown = [(name, value) for name, value in rows if value]
    width = max((len(name) for name, _ in shown), default=0)
    for name, value in shown:
        stdout.print(Text.assemble((f"{name:<{width}}  ", "bold"), value))


def render_result(result: message_pb2.WorkflowResult) -> None:
    """Status, ids, version, suspended paths with payloads, result or error, step table."""
    fields(
        [
            ("status", run_status_name(result.status)),
            ("run", result.run_id),
            ("workflow", result.workflow_id),
            ("version", str(result.version)),
            ("trace", result.trace_id),
        ]
    )
    _suspended(result)
    if result.HasField("result"):
        fields([("result", json_text(result.result))])
    if result.HasField("error"):
        fields([("error", _error_text(result.error))])
    if result.HasField("state"):
        fields([("state", json_text(result.state))])
    if result.steps:
        stdout.print(_steps_table(result))


def _suspended(result: message_pb2.WorkflowResult) -> None:
    if not result.suspended:
        return
    stdout.print(Text("suspended", "bold"))
    for path in result.suspended:
        key = dotted(path)
        items = _items(key, result.steps[key]) if key in result.steps else []
        waiting: dict[str, struct_pb2.Value | None] = {
            name: item.suspend_payload if item.HasField("suspend_payload") else None
            for name, item in items
            if item.status == enums_pb2.STEP_STATUS_SUSPENDED and not item.items
        }  # a foreach: each waiting item, with its own payload
        if not waiting:
            waiting = {key: result.suspend_payload.get(key)}
        for name, payload in waiting.items():
            shown = f"  {json_text(payload)}" if payload is not None else ""
            stdout.print(Text(f"  {name}{shown}"))
    for label in sorted(result.resume_labels):
        target = result.resume_labels[label]
        index = f"[{target.foreach_index}]" if target.HasField("foreach_index") else ""
        stdout.print(Text(f"  label {label} -> {dotted(target.step)}{index}"))


def _error_text(error: message_pb2.RunError) -> str:
    parts = [error.reason, error.type, error.message]
    where = f" (step {dotted(error.step)})" if error.step.segments else ""
    return ": ".join(p for p in parts if p) + where


def _steps_table(result: message_pb2.WorkflowResult) -> Table:
    grid = table("step", "status", "attempt", title="steps")
    for path, step in sorted(result.steps.items(), key=_execution_order):
        grid.add_row(Text(path), step_status_name(step.status), str(step.attempt))
        for name, item in _items(path, step):
            grid.add_row(Text(name), step_status_name(item.status), str(item.attempt))
    return grid


def _items(name: str, step: message_pb2.StepResult) -> list[tuple[str, message_pb2.StepResult]]:
    """A foreach step's items by index, named `name[i]`; where a foreach runs inside the
    items of another, each outer item and then its own items, `name[i][j]`."""
    out = []
    for index in sorted(step.items):
        item = step.items[index]
        out.append((f"{name}[{index}]", item))
        out += _items(f"{name}[{index}]", item)
    return out


def _execution_order(item: tuple[str, message_pb2.StepResult]) -> tuple[bool, int, str]:
    path, step = item
    return (not step.HasField("started_at"), step.started_at.ToNanoseconds(), path)


def render_run(run: message_pb2.Run) -> None:
    """The run's ids, status and times, then its latest result."""
    fields(
        [
            ("run", run.run_id),
            ("workflow", run.workflow_id),
            ("resource", run.resource_id),
            ("status", run_status_name(run.status)),
            ("created", timestamp(run.create_time)),
            ("updated", timestamp(run.update_time)),
        ]
    )
    if run.HasField("result"):
        stdout.print()
        render_result(run.result)


def render_runs(response: request_response_pb2.ListRunsResponse) -> None:
    """A table of runs, then the token of the next page when there is one."""
    grid = table("run", "workflow", "status", "resource", "created", "updated")
    # Whole on one line, for copying (in 80 columns a run id folded over three lines):
    # the other columns fold instead. Ids past 64 characters (yours) may still fold.
    longest = max((len(run.run_id) for run in response.runs), default=0)
    grid.columns[0].min_width = min(longest, 64)
    for run in response.runs:
        grid.add_row(
            Text(run.run_id),
            Text(run.workflow_id),
            run_status_name(run.status),
            Text(run.resource_id),
            timestamp(run.create_time),
            timestamp(run.update_time),
        )
    stdout.print(grid)
    if response.next_page_token:
        fields([("next page", f"--page-token {response.next_page_token}")])


_EVENT_STYLES = {
    "RUN_STARTED": "bold",
    "STEP_STARTED": "cyan",
    "STEP_SUCCEEDED": "green",
    "STEP_FAILED": "red",
    "STEP_SUSPENDED": "yellow",
    "STEP_RESUMED": "magenta",
    "STEP_CANCELED": "dim",
    "RUN_SETTLED": "bold",
}
_EVENT_WIDTH = max(len(name) for name in _EVENT_STYLES)


def event_type_name(kind: enums_pb2.RunEventType.ValueType) -> str:
    """`STEP_STARTED` for RUN_EVENT_TYPE_STEP_STARTED."""
    return enums_pb2.RunEventType.Name(kind).removeprefix("RUN_EVENT_TYPE_")


def event_step(event: message_pb2.RunEvent) -> str:
    """The event's step as people write it, `[i]` marking a foreach item; `-` for none."""
    index = f"[{event.foreach_index}]" if event.HasField("foreach_index") else ""
    return dotted(event.step) + index if event.step.segments else "-"


def render_event(event: message_pb2.RunEvent) -> None:
    """One line: sequence, time, event type, step path, run status, and what went wrong."""
    kind = event_type_name(event.type)
    line = Text.assemble(
        (f"{event.sequence:>4}", "bold"),
        f"  {precise_timestamp(event.time)}  ",
        (f"{kind:<{_EVENT_WIDTH}}", _EVENT_STYLES.get(kind, "")),
        "  ",
        Text(event_step(event)),
        f"  {run_status_name(event.run_status)}",
    )
    error = event.result.error if event.HasField("result") else event.step_result.error
    if error.reason or error.message:
        line.append(f"  {_error_text(error)}", "red")
    if event.HasField("result") and event.result.suspended:
        waiting = ", ".join(dotted(path) for path in event.result.suspended)
        line.append(f"  suspended: {waiting}", "yellow")
    stdout.print(line)
