"""Checks shared by the resume-rule tests: a refused resume must leave the run alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from tests.support.api import call_error, value
from tests.support.workflows import lines
from waystation.api.v1 import enums_pb2, message_pb2
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub

DOMAIN = "waystation.dev"
SUSPENDED = enums_pb2.RUN_STATUS_SUSPENDED


def resume(run_id: str, data: Any = None, **fields: Any) -> rr.ResumeRequest:
    """A ResumeRequest; `data` None leaves resume_data unset."""
    if data is not None:
        fields["resume_data"] = value(data)
    return rr.ResumeRequest(run_id=run_id, **fields)


async def observe(
    stub: WorkflowServiceStub, run_id: str, log: Path | None = None
) -> tuple[message_pb2.Run, list[str]]:
    """Everything a refused resume must leave alone: the whole Run (with state and labels)
    and the side-effect log."""
    options = message_pb2.OutputOptions(include_state=True, include_resume_labels=True)
    run = await stub.GetRun(rr.GetRunRequest(run_id=run_id, output_options=options))
    return run, lines(log) if log else []


async def refused(
    stub: WorkflowServiceStub, request: rr.ResumeRequest, log: Path | None = None
) -> Any:
    """Send a resume that must fail; assert the run is unchanged and still SUSPENDED;
    return the unpacked error."""
    before = await observe(stub, request.run_id, log)
    assert before[0].status == SUSPENDED
    error = await call_error(stub.ResumeRun(request))
    assert await observe(stub, request.run_id, log) == before
    return error


def assert_error(error: Any, code: grpc.StatusCode, reason: str, **metadata: str) -> None:
    assert error.code == code, error
    assert error.reason == reason, error
    assert error.domain == DOMAIN
    for key, expected in metadata.items():
        assert error.metadata.get(key) == expected, (key, error.metadata)
