"""Proto messages to domain values and back. No logic beyond translation lives here."""

from __future__ import annotations

from math import isfinite, isnan
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.json_format import ParseError
from opentelemetry import propagate, trace

from waystation.api.v1 import enums_pb2, message_pb2
from waystation.engine import RunRecord, RunStatus, StepRecord, StepStatus, WorkflowResultData
from waystation.engine.errors import InvalidArgument, Violations
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


# -- google.protobuf.Value / Struct <-> JSON ---------------------------------------------
#
# Hand-written equivalents of json_format.MessageToDict and json_format.ParseDict for Value
# and Struct, which walk descriptors in pure Python (about 5% of the server's CPU); these
# only call the upb message's own accessors: reading is about twice as fast (the accessors'
# cost is most of what is left), writing three to four times. They behave as json_format
# does, errors and their messages included: tests/test_convert.py compares the two on fixed
# and random data, so any change here has to keep that test passing.

_MAX_DEPTH = 100
"""ParseDict's max_recursion_depth: every Value, Struct and ListValue is one level, the
message written into being level 1 (so a Value can hold 49 nested lists around a number,
or 50 nested lists when the innermost is empty)."""

_TOO_DEEP = f"Message too deep. Max recursion depth is {_MAX_DEPTH}"


def _number(value: struct_pb2.Value) -> float:
    number = value.number_value
    if isfinite(number):
        return number
    name = "NaN" if isnan(number) else "Infinity"  # MessageToDict's words, -inf included
    raise ValueError(
        f"Fail to serialize {name} for Value.number_value, which would parse as string_value"
    )


def _read_value(value: struct_pb2.Value) -> JSON:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return _read_struct(value.struct_value)
    if kind == "list_value":
        return [_read_value(item) for item in value.list_value.values]
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return _number(value)
    if kind == "bool_value":
        return value.bool_value
    return None  # null_value, or no kind set: MessageToDict reads both as null


def _read_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    fields = struct.fields
    out: dict[str, Any] = {}
    for key in fields:
        out[key] = _read_value(fields[key])
    return out


class _NotJson(Exception):
    """A value of no JSON type; `path` collects its place (innermost first) on the way out,
    so that the ParseError names it as ParseDict does without building paths up front."""

    def __init__(self, data: Any) -> None:
        super().__init__()
        self.data = data
        self.path: list[str] = []


def _write_value(data: Any, out: struct_pb2.Value, depth: int) -> None:
    """ParseDict's _ConvertValueMessage: the same checks in the same order, the same
    setters, the same writes before an error. `depth` is the level of `out`."""
    if depth > _MAX_DEPTH:
        raise ParseError(_TOO_DEEP)
    kind = type(data)  # exact JSON types first (the common case); subclasses below
    if kind is str:
        out.string_value = data
    elif kind is float or kind is int:
        out.number_value = data
    elif kind is bool:
        out.bool_value = data
    elif data is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(data, dict):
        _write_struct(data, out.struct_value, depth + 1)
    elif isinstance(data, list | tuple):
        _write_list(data, out.list_value, depth + 1)
    elif isinstance(data, str):  # (bool cannot be subclassed: no isinstance check needed)
        out.string_value = data
    elif isinstance(data, int | float):
        out.number_value = data
    else:
        raise _NotJson(data)


def _write_struct(data: dict[Any, Any], out: struct_pb2.Struct, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ParseError(_TOO_DEEP)
    out.Clear()  # marks the Struct present even when `data` is empty
    fields = out.fields
    for key in data:
        try:
            _write_value(data[key], fields[key], depth + 1)
        except _NotJson as exc:
            exc.path.append(f".{key}")
            raise


def _write_list(data: list[Any] | tuple[Any, ...], out: struct_pb2.ListValue, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ParseError(_TOO_DEEP)
    out.ClearField("values")  # marks the ListValue present even when `data` is empty
    add = out.values.add
    for index, item in enumerate(data):
        try:
            _write_value(item, add(), depth + 1)
        except _NotJson as exc:
            exc.path.append(f"[{index}]")
            raise


def _not_json(error: _NotJson, root: str) -> ParseError:
    path = root + "".join(reversed(error.path))
    return ParseError(f"Value {error.data} has unexpected type {type(error.data)} at {path}")


def value_to_json(value: struct_pb2.Value) -> JSON:
    """json_format.MessageToDict(value): numbers as floats, null (or no kind set) as None;
    ValueError for NaN and infinities."""
    return _read_value(value)


def struct_to_json(value: struct_pb2.Struct, field: str = "") -> dict[str, Any]:
    """A Struct as JSON; InvalidArgument (naming `field`) when it holds NaN or infinities."""
    try:
        return _read_struct(value)
    except ValueError as exc:
        raise InvalidArgument(field or "struct", f"not representable as JSON: {exc}") from exc


def json_to_value(data: JSON, out: struct_pb2.Value) -> None:
    """json_format.ParseDict(data, out): ParseError for a value of no JSON type or nesting
    too deep; whatever the setters raise (OverflowError for an int beyond a double, TypeError
    for a key that is not text, UnicodeEncodeError for lone surrogates) passes through."""
    try:
        _write_value(data, out, 1)
    except _NotJson as exc:
        error = exc
    else:
        return
    raise _not_json(error, "Value")  # outside the handler: no chained _NotJson, as ParseDict


def json_to_struct(data: dict[str, Any], out: struct_pb2.Struct) -> None:
    """json_format.ParseDict(data, out) for a Struct `out`, errors as json_to_value."""
    if not isinstance(data, dict):
        raise ParseError(f"Struct must be in a dict which is {data} at Struct")
    try:
        _write_struct(data, out, 1)
    except _NotJson as exc:
        error = exc
    else:
        return
    raise _not_json(error, "Struct")


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
    if step := error.get("step"):  # a StepPath in an answer is never empty
        out.step.segments.extend(step)
    details = {k: v for k, v in (error.get("details") or {}).items() if k != "traceback"}
    if details:
        json_to_struct(details, out.details)


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
        step = out.steps[key]
        step_to_proto(record, step)
        for indices, item in result.items.get(key, {}).items():
            place = step
            for index in indices:  # item j of a foreach inside item i of another: [i][j]
                place = place.items[index]
            step_to_proto(item, place)
    for path in result.suspended:
        out.suspended.add(segments=path)
    for key, payload in result.suspend_payload.items():
        json_to_value(payload, out.suspend_payload[key])
    if options.include_state:
        json_to_struct(result.state, out.state)
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
    EventType.STEP_CANCELED: enums_pb2.RUN_EVENT_TYPE_STEP_CANCELED,
}


def event_to_proto(run_id: str, event: dict[str, Any]) -> message_pb2.RunEvent:
    out = message_pb2.RunEvent(
        sequence=event["sequence"],
        run_id=run_id,
        type=EVENT_TYPE_TO_PROTO[EventType(event["type"])],
        run_status=RUN_STATUS_TO_PROTO[RunStatus(event["run_status"])],
    )
    timestamp(event["time"], out.time)
    if step := event.get("step"):
        out.step.segments.extend(step)
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
    problems = Violations()
    field = "tracing_options.metadata"
    traced = TracingOptions(
        metadata=problems.check(struct_to_json, options.metadata, field, default={}),
        request_context_keys=list(options.request_context_keys),
        trace_id=options.trace_id,
        parent_span_id=options.parent_span_id,
        tags=list(options.tags),
    )
    parent = problems.check(traced.parent, default=None)  # validates the ids either way
    problems.raise_any()
    carrier = {key: value for key, value in (metadata or ()) if isinstance(value, str)}
    extracted = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    if extracted.is_valid:
        return CallTrace(traced)
    return CallTrace(traced, parent, traced.root_trace_id())
