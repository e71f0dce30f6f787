"""Failed calls for people: the status code, the message and the rich error details.

The details come from the `grpc-status-details-bin` trailer (a `google.rpc.Status`):
`google.rpc.ErrorInfo`, `google.rpc.BadRequest` and `waystation.v1.SuspendedStepsDetail`.
The process exits with the numeric gRPC status code.
"""

from __future__ import annotations

from google.protobuf import any_pb2
from google.rpc import error_details_pb2
from grpc import Call, StatusCode
from grpc_status import rpc_status
from rich.console import Console
from rich.text import Text

from waystation.api.v1 import errordetails_pb2
from waystation.cli.render import dotted

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def exit_code(call: Call) -> int:
    """The numeric gRPC status code of a failed call (never 0)."""
    number: int = call.code().value[0]
    return number or 2


def report_rpc_error(call: Call, deadline_hint: str = "") -> None:
    """Print the code name, the message and every detail of a failed call to stderr, and
    `deadline_hint` when the call ran out of time."""
    code = call.code()
    stderr.print(
        Text(f"Error: {code.name} ({exit_code(call)}): {call.details() or ''}", "bold red")
    )
    for line in detail_lines(call):
        stderr.print(Text(f"  {line}"))
    if code is StatusCode.DEADLINE_EXCEEDED and deadline_hint:
        stderr.print(Text(f"  {deadline_hint}"))


def settling_hint(*, run_id: str = "", request_id: str = "", workflow_id: str = "") -> str:
    """The deadline hint of a call that starts or resumes a run: the server may have accepted
    it and go on after the deadline, so say how to see how it ends, or to retry safely."""
    ways = [f"see how it ends with `waystation runs show {run_id}`"] if run_id else []
    if request_id:
        ways.append(f"retry with the same --request-id {request_id} for its outcome")
    if ways:
        return f"The server may have accepted the call and go on: {', or '.join(ways)}."
    return (
        "The server may have started the run and go on under an id this call never got"
        f" (`waystation runs list --workflow {workflow_id}` shows it); pass --run-id or"
        " --request-id next time, so that a retry is safe."
    )


def detail_lines(call: Call) -> list[str]:
    """One line per fact found in the call's rich error details."""
    try:
        status = rpc_status.from_call(call)
    except ValueError:  # the trailer contradicts the call's code or message
        return []
    if status is None:
        return []
    return [line for detail in status.details for line in _describe(detail)]


def _describe(detail: any_pb2.Any) -> list[str]:
    info = error_details_pb2.ErrorInfo()
    if detail.Unpack(info):
        return _error_info(info)
    bad_request = error_details_pb2.BadRequest()
    if detail.Unpack(bad_request):
        return [f"{v.field}: {v.description}" for v in bad_request.field_violations]
    steps = errordetails_pb2.SuspendedStepsDetail()
    if detail.Unpack(steps):
        return _suspended(steps)
    return [f"detail: {detail.TypeName()}"]


def _error_info(info: error_details_pb2.ErrorInfo) -> list[str]:
    domain = f" ({info.domain})" if info.domain else ""
    lines = [f"reason: {info.reason}{domain}"]
    return lines + [f"{key}: {info.metadata[key]}" for key in sorted(info.metadata)]


def _suspended(steps: errordetails_pb2.SuspendedStepsDetail) -> list[str]:
    lines = [f"suspended: {dotted(path)}" for path in steps.suspended]
    for label in sorted(steps.resume_labels):
        target = steps.resume_labels[label]
        index = f" [{target.foreach_index}]" if target.HasField("foreach_index") else ""
        lines.append(f"resume label {label}: {dotted(target.step)}{index}")
    return lines
