"""Request messages, call metadata and channel options built from keyword arguments.

The sync and the async client share these builders, so both send exactly the same requests.
`None` always means "leave the field unset"; send JSON null as `to_value(None)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeAlias, cast

from google.protobuf import struct_pb2, timestamp_pb2

from waystation_client._gen.waystation.v1 import enums_pb2, message_pb2
from waystation_client._gen.waystation.v1 import request_response_pb2 as rr
from waystation_client._values import to_struct, to_value

StepLike: TypeAlias = "str | Sequence[str] | message_pb2.StepPath"
"""A step path: `["outer", "inner"]`, the text form `"outer.inner"`, or a `StepPath`."""

MetadataValue: TypeAlias = "str | bytes"
MetadataLike: TypeAlias = "Mapping[str, MetadataValue] | Iterable[tuple[str, MetadataValue]]"
"""Call metadata: a mapping, or (key, value) pairs (a key may repeat)."""

Metadata: TypeAlias = "tuple[tuple[str, MetadataValue], ...]"

RECEIVE_LIMIT_OPTION = "grpc.max_receive_message_length"

StatusLike: TypeAlias = "int | str"
"""A run status: a `RunStatus` value, or its name with or without the `RUN_STATUS_` prefix."""


def step_path(step: StepLike) -> message_pb2.StepPath:
    """A StepPath from segments, a `StepPath`, or the text form (split on ".")."""
    if isinstance(step, message_pb2.StepPath):
        return step
    if isinstance(step, str):
        return message_pb2.StepPath(segments=step.split(".") if step else [])
    return message_pb2.StepPath(segments=list(step))


def call_metadata(
    *sources: MetadataLike | None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> Metadata | None:
    """All `sources` in order, then the W3C trace context entries; None when empty."""
    pairs: list[tuple[str, MetadataValue]] = []
    for source in sources:
        if source is not None:
            pairs += source.items() if isinstance(source, Mapping) else source
    if traceparent:
        pairs.append(("traceparent", traceparent))
    if tracestate:
        pairs.append(("tracestate", tracestate))
    return tuple(pairs) or None


def channel_options(
    target: object,
    options: Sequence[tuple[str, Any]] | None,
    max_receive_message_bytes: int | None,
) -> list[tuple[str, Any]]:
    """The options of the channel that a client opens to the address `target`: `options`, and
    the receive limit `max_receive_message_bytes`, else one in `options`, else none (-1): the
    server bounds its answers itself, and says so better. A channel given as `target` keeps
    its own settings; a receive limit for it is refused, as it would be ignored.
    """
    if not isinstance(target, str):
        if max_receive_message_bytes is not None:
            raise ValueError(
                "max_receive_message_bytes is for a channel the client opens; give yours the"
                f" option {RECEIVE_LIMIT_OPTION!r}"
            )
        return []
    limit = max_receive_message_bytes
    chosen = [(k, v) for k, v in options or () if k != RECEIVE_LIMIT_OPTION or limit is None]
    if all(key != RECEIVE_LIMIT_OPTION for key, _ in chosen):
        chosen.append((RECEIVE_LIMIT_OPTION, -1 if limit is None else limit))
    return chosen


def output_options(
    include_state: bool, include_resume_labels: bool
) -> message_pb2.OutputOptions | None:
    """The OutputOptions message; None when it would only carry defaults."""
    if not (include_state or include_resume_labels):
        return None
    return message_pb2.OutputOptions(
        include_state=include_state, include_resume_labels=include_resume_labels
    )


def _struct(mapping: Mapping[str, object] | struct_pb2.Struct | None) -> struct_pb2.Struct | None:
    if mapping is None or isinstance(mapping, struct_pb2.Struct):
        return mapping
    return to_struct(mapping)


def _value(obj: object) -> struct_pb2.Value | None:
    return None if obj is None else to_value(obj)


def start_run_request(
    workflow_id: str,
    *,
    input_data: object = None,
    run_id: str = "",
    resource_id: str = "",
    initial_state: Mapping[str, object] | None = None,
    request_context: Mapping[str, object] | None = None,
    request_id: str = "",
    return_immediately: bool = False,
    tracing_options: message_pb2.TracingOptions | None = None,
    include_state: bool = False,
    include_resume_labels: bool = False,
) -> rr.StartRunRequest:
    """A StartRunRequest."""
    return rr.StartRunRequest(
        workflow_id=workflow_id,
        run_id=run_id,
        resource_id=resource_id,
        input_data=_value(input_data),
        initial_state=_struct(initial_state),
        request_context=_struct(request_context),
        tracing_options=tracing_options,
        output_options=output_options(include_state, include_resume_labels),
        request_id=request_id,
        return_immediately=return_immediately,
    )


def resume_request(
    run_id: str,
    *,
    resume_data: object = None,
    step: StepLike | None = None,
    label: str = "",
    foreach_index: int | None = None,
    workflow_id: str = "",
    request_context: Mapping[str, object] | None = None,
    retry_count: int = 0,
    request_id: str = "",
    validate_only: bool = False,
    expected_version: int | None = None,
    tracing_options: message_pb2.TracingOptions | None = None,
    include_state: bool = False,
    include_resume_labels: bool = False,
) -> rr.ResumeRequest:
    """A ResumeRequest; `step` as segments, a `StepPath` or text split on "."."""
    request = rr.ResumeRequest(
        run_id=run_id,
        workflow_id=workflow_id,
        resume_data=_value(resume_data),
        step=None if step is None else step_path(step),
        label=label,
        request_context=_struct(request_context),
        retry_count=retry_count,
        tracing_options=tracing_options,
        output_options=output_options(include_state, include_resume_labels),
        request_id=request_id,
        validate_only=validate_only,
    )
    # Optional fields: 0 is a value, so only an explicit None leaves them unset.
    if foreach_index is not None:
        request.foreach_index = foreach_index
    if expected_version is not None:
        request.expected_version = expected_version
    return request


def _timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)  # a naive datetime is taken as UTC
    return stamp


def _status(status: StatusLike) -> enums_pb2.RunStatus.ValueType:
    if isinstance(status, str):
        name = status.upper()
        if not name.startswith("RUN_STATUS_"):
            name = "RUN_STATUS_" + name
        return enums_pb2.RunStatus.Value(name)
    return cast("enums_pb2.RunStatus.ValueType", status)  # an open enum takes any int


def list_runs_request(
    *,
    workflow_id: str = "",
    statuses: Iterable[StatusLike] = (),
    resource_id: str = "",
    create_time_after: datetime | None = None,
    create_time_before: datetime | None = None,
    page_size: int = 0,
    page_token: str = "",
) -> rr.ListRunsRequest:
    """A ListRunsRequest; statuses as enum values or names (`"SUSPENDED"` works)."""
    return rr.ListRunsRequest(
        workflow_id=workflow_id,
        statuses=[_status(s) for s in statuses],
        resource_id=resource_id,
        create_time_after=_timestamp(create_time_after),
        create_time_before=_timestamp(create_time_before),
        page_size=page_size,
        page_token=page_token,
    )


def restart_run_request(
    run_id: str,
    *,
    request_context: Mapping[str, object] | None = None,
    request_id: str = "",
    tracing_options: message_pb2.TracingOptions | None = None,
    include_state: bool = False,
    include_resume_labels: bool = False,
    force: bool = False,
) -> rr.RestartRunRequest:
    """A RestartRunRequest."""
    return rr.RestartRunRequest(
        run_id=run_id,
        request_context=_struct(request_context),
        tracing_options=tracing_options,
        output_options=output_options(include_state, include_resume_labels),
        request_id=request_id,
        force=force,
    )


def time_travel_run_request(
    run_id: str,
    step: StepLike,
    *,
    input_data: object = None,
    resume_data: object = None,
    initial_state: Mapping[str, object] | None = None,
    request_context: Mapping[str, object] | None = None,
    request_id: str = "",
    tracing_options: message_pb2.TracingOptions | None = None,
    include_state: bool = False,
    include_resume_labels: bool = False,
) -> rr.TimeTravelRunRequest:
    """A TimeTravelRunRequest."""
    return rr.TimeTravelRunRequest(
        run_id=run_id,
        step=step_path(step),
        input_data=_value(input_data),
        resume_data=_value(resume_data),
        initial_state=_struct(initial_state),
        request_context=_struct(request_context),
        tracing_options=tracing_options,
        output_options=output_options(include_state, include_resume_labels),
        request_id=request_id,
    )
