"""Small helpers for tests that talk to a real server: JSON in and out of protobuf Values,
and the rich error details of a failed call, unpacked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from waystation.api.v1 import errordetails_pb2, message_pb2


def value(data: Any) -> struct_pb2.Value:
    out = struct_pb2.Value()
    json_format.ParseDict(data, out)
    return out


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    json_format.ParseDict(data, out)
    return out


def to_json(message: Any) -> Any:
    return json_format.MessageToDict(message)


def path(*segments: str) -> message_pb2.StepPath:
    return message_pb2.StepPath(segments=list(segments))


def paths(result: message_pb2.WorkflowResult) -> list[list[str]]:
    """The suspended paths of a result as plain lists."""
    return [list(p.segments) for p in result.suspended]


@dataclass
class RichError:
    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: dict[str, str] = field(default_factory=dict)
    suspended: list[list[str]] = field(default_factory=list)
    labels: dict[str, list[str]] = field(default_factory=dict)
    """The resume labels of a SuspendedStepsDetail: label -> step path."""


def rich_error(error: grpc.aio.AioRpcError | grpc.RpcError) -> RichError:
    """The status code and unpacked google.rpc details of a failed call."""
    out = RichError(error.code(), error.details() or "")  # type: ignore[union-attr]
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            out.reason, out.domain, out.metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.violations = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(errordetails_pb2.SuspendedStepsDetail.DESCRIPTOR):
            steps = errordetails_pb2.SuspendedStepsDetail()
            detail.Unpack(steps)
            out.suspended = [list(p.segments) for p in steps.suspended]
            out.labels = {k: list(v.step.segments) for k, v in steps.resume_labels.items()}
    return out


async def call_error(call: Awaitable[Any]) -> RichError:
    """Await a call that must fail, and return its unpacked error."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return rich_error(exc)
    raise AssertionError("the call succeeded but was expected to fail")


async def assert_eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll `check` until it holds, instead of sleeping a fixed time."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition did not hold in time")
        await asyncio.sleep(interval)
