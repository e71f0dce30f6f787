"""Proto messages to domain values and back. No logic beyond translation lives here."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from opentelemetry import propagate, trace

from waystation.api.v1 import enums_pb2, message_pb2
from waystation.engine import RunRecord, RunStatus, StepRecord, StepStatus, WorkflowResultData
from waystation.engine.errors import InvalidArgument
from waystation.engine.events import EventType
from waystation.engine.model import JSON, LabelTarget
from waystation.engine.paths import Path
from waystation.engine.tracing import CallTrace, TracingOptions

RUN_STATUS_TO_PROTO = {
    RunStatus.PENDING: enums_pb2.RUN_STATUS_PENDING,
    RunStatus.RUNNING: enums_pb2.RUN_STATUS_RUNNING,
    RunStatus.SUSPENDED: enums_pb2.RUN_STATUS_SUSPENDED,
    RunStatus.WAITING: enums_pb2.RUN_STATUS_WAITING,
    RunStatus.SUCCESS: enums_pb2.RUN_STATUS_SUCCESS,
    RunStatus.FAILED: enums_pb2.RUN_STATUS_FAILED,
    RunStatus.CANCELED: enums_pb2.RUN_STATUS_CANCELED,
}
RUN_STATUS_FROM_PROTO = {v: k for k, v in RUN_STATUS_TO_PROTO.items()}

STEP_STATUS_TO_PROTO = {
    StepStatus.RUNNING: enums_pb2.STEP_STATUS_RUNNING,
    StepStatus.SUCCESS: enums_pb2.STEP_STATUS_SUCCESS,
    StepStatus.FAILED: enums_pb2.STEP_STATUS_FAILED,
    StepStatus.SUSPENDED: enums_pb2.STEP_STATUS_SUSPENDED,
    StepStatus.WAITING: enums_pb2.STEP_STATUS_WAITING,
    StepStatus.SKIPPED: enums_pb2.STEP_STATUS_SKIPPED,
    StepStatus.CANCELED: enums_pb2.STEP_STATUS_CANCELED,
}


def value_to_json(value: struct_pb2.Value) -> JSON:
    return json_format.MessageToDict(value)


def struct_to_json(value: struct_pb2.Struct, field: str = "") -> dict[str, Any]:
    """A Struct as JSON; InvalidArgument (naming `field`) when it holds NaN or infinities."""
    try:
        return json_format.MessageToDict(value)
    except ValueError as exc:
        raise InvalidArgument(field or "struct", f"not representable as JSON: {exc}") from exc


def json_to_value(data: JSON, out: struct_pb2.Value) -> None:
    json_format.ParseDict(data, out)


def optional_value(message: Any, field: str) -> JSON:
    """A Value field as JSON, or None when the field is unset. InvalidArgument when it holds
    what JSON cannot (NaN, infinities)."""
    if not message.HasField(field):
        return None
    try:
        return value_to_json(getattr(message, field))
    except ValueError as exc:
        raise InvalidArgument(field, f"not representable as JSON: {exc}") from exc


def timestamp(seconds: float | None, out: timestamp_pb2.Timestamp) -> None:
    if seconds is not None:
        out.FromNanoseconds(int(seconds * 1e9))


def seconds(value: timestamp_pb2.Timestamp) -> float:
    return value.ToNanoseconds() / 1e9


def path_from_proto(path: message_pb2.StepPath) -> Path:
    return tuple(path.segments)


def error_to_proto(error: dict[str, Any], out: message_pb2.RunError) -> None:
    out.message = error.get("message", "")
    out.reason = error.get("reason", "")
    out.type = error.get("type", "")
    out.step.segments.extend(error.get("step") or [])
    details = {k: v for k, v in (error.get("details") or {}).items() if k != "traceback"}
    if details:
        json_format.ParseDict(details, out.details)


def step_to_proto(record: StepRecord, out: message_pb2.StepResult) -> None:
    out.status = STEP_STATUS_TO_PROTO[record.status]
    for name in ("output", "payload", "suspend_payload", "resume_payload"):
        value = getattr(record, name)
        if value is not None:
            json_to_value(value, getattr(out, name))
    if record.error:
        error_to_proto(record.error, out.error)
    for name in ("started_at", "ended_at", "suspended_at", "resumed_at"):
        timestamp(getattr(record, name), getattr(out, name))
    out.attempt = record.attempt
    out.resumed_by = record.resumed_by
    if record.status is StepStatus.SUSPENDED:
        timestamp(record.metadata.get("expires_at"), out.resume_deadline)
    if record.status is StepStatus.WAITING:
        timestamp(record.metadata.get("wake_at"), out.wake_time)


def label_to_proto(target: LabelTarget, out: message_pb2.ResumeLabel) -> None:
    out.step.segments.extend(target.path)
    if target.foreach_index is not None:
        out.foreach_index = target.foreach_index


def result_to_proto(
    result: WorkflowResultData, options: message_pb2.OutputOptions
) -> message_pb2.WorkflowResult:
    out = message_pb2.WorkflowResult(
        run_id=result.run_id,
        workflow_id=result.workflow_id,
        status=RUN_STATUS_TO_PROTO[result.status],
        version=result.version,
        trace_id=result.trace_id,
        span_id=result.span_id,
    )
    if result.input is not None:
        json_to_value(result.input, out.input)
    if result.result is not None and result.status is RunStatus.SUCCESS:
        json_to_value(result.result, out.result)
    if result.error:
        error_to_proto(result.error, out.error)
    for key, record in result.steps.items():
        step_to_proto(record, out.steps[key])
        for index, item in result.items.get(key, {}).items():
            step_to_proto(item, out.steps[key].items[index])
    for path in result.suspended:
        out.suspended.add(segments=path)
    for key, payload in result.suspend_payload.items():
        json_to_value(payload, out.suspend_payload[key])
    if options.include_state:
        json_format.ParseDict(result.state, out.state)
    if options.include_resume_labels:
        for label, target in result.resume_labels.items():
            label_to_proto(target, out.resume_labels[label])
    return out


def run_to_proto(
    run: RunRecord,
    result: WorkflowResultData | None = None,
    options: message_pb2.OutputOptions | None = None,
) -> message_pb2.Run:
    out = message_pb2.Run(
        run_id=run.run_id,
        workflow_id=run.workflow_id,
        resource_id=run.resource_id,
        status=RUN_STATUS_TO_PROTO[run.status],
    )
    timestamp(run.create_time, out.create_time)
    timestamp(run.update_time, out.update_time)
    if result is not None:
        out.result.CopyFrom(result_to_proto(result, options or message_pb2.OutputOptions()))
    return out


EVENT_TYPE_TO_PROTO = {
    EventType.RUN_STARTED: enums_pb2.RUN_EVENT_TYPE_RUN_STARTED,
    EventType.STEP_STARTED: enums_pb2.RUN_EVENT_TYPE_STEP_STARTED,
    EventType.STEP_SUCCEEDED: enums_pb2.RUN_EVENT_TYPE_STEP_SUCCEEDED,
    EventType.STEP_FAILED: enums_pb2.RUN_EVENT_TYPE_STEP_FAILED,
    EventType.STEP_SUSPENDED: enums_pb2.RUN_EVENT_TYPE_STEP_SUSPENDED,
    EventType.STEP_RESUMED: enums_pb2.RUN_EVENT_TYPE_STEP_RESUMED,
    EventType.RUN_SETTLED: enums_pb2.RUN_EVENT_TYPE_RUN_SETTLED,
}


def event_to_proto(run_id: str, event: dict[str, Any]) -> message_pb2.RunEvent:
    out = message_pb2.RunEvent(
        sequence=event["sequence"],
        run_id=run_id,
        type=EVENT_TYPE_TO_PROTO[EventType(event["type"])],
        run_status=RUN_STATUS_TO_PROTO[RunStatus(event["run_status"])],
    )
    timestamp(event["time"], out.time)
    if "step" in event:
        out.step.segments.extend(event["step"])
    if "foreach_index" in event:
        out.foreach_index = event["foreach_index"]
    if "step_result" in event:
        step_to_proto(StepRecord.from_json(event["step_result"]), out.step_result)
    if "result" in event:
        result = WorkflowResultData.from_json(event["result"])
        out.result.CopyFrom(result_to_proto(result, message_pb2.OutputOptions()))
    return out


def call_trace(options: message_pb2.TracingOptions, metadata: Any) -> CallTrace:
    """The tracing of a call: W3C context in the metadata wins (the gRPC server span already
    continues it); without it, `trace_id` / `parent_span_id` place the run in that trace."""
    traced = TracingOptions(
        metadata=struct_to_json(options.metadata, "tracing_options.metadata"),
        request_context_keys=list(options.request_context_keys),
        trace_id=options.trace_id,
        parent_span_id=options.parent_span_id,
        tags=list(options.tags),
    )
    parent = traced.parent()  # validates the ids either way
    carrier = {key: value for key, value in (metadata or ()) if isinstance(value, str)}
    extracted = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    return CallTrace(traced, None if extracted.is_valid else parent)
