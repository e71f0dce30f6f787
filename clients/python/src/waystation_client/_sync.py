"""`WorkflowClient`: the blocking client, on a `grpc.Channel`.

Every method sends one RPC and returns the generated response message; a failed call raises
a `WaystationError` subclass (see `waystation_client._errors`). `timeout` is the call's
deadline in seconds; `metadata` adds call metadata (e.g. `traceparent`, `authorization`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc

from waystation_client import _requests as build
from waystation_client._errors import error_from_rpc_error
from waystation_client._gen.waystation.v1 import message_pb2, service_pb2_grpc
from waystation_client._gen.waystation.v1 import request_response_pb2 as rr
from waystation_client._requests import MetadataLike, StatusLike, StepLike, call_metadata

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class WorkflowClient:
    """A blocking client of the Waystation `WorkflowService` (threads may share it).

    Build it from an address (`"127.0.0.1:50051"`; TLS when `credentials` are given) or from a
    `grpc.Channel` that you own. `metadata` is sent with every call. Use it as a context
    manager, or call `close()`, to close a channel that it opened.

    A channel that it opens takes answers of any size (the server refuses one over its own
    `--max-message-bytes` with `ResponseTooLargeError`); `max_receive_message_bytes` sets a
    limit, and an answer over it is a `ResponseTooLargeError` too, `limit_of == "client"`.
    """

    def __init__(
        self,
        target: str | grpc.Channel,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        metadata: MetadataLike | None = None,
        max_receive_message_bytes: int | None = None,
    ) -> None:
        self._owns_channel = isinstance(target, str)
        chosen = build.channel_options(target, options, max_receive_message_bytes)
        if not isinstance(target, str):
            self.channel = target
        elif credentials is None:
            self.channel = grpc.insecure_channel(target, chosen)
        else:
            self.channel = grpc.secure_channel(target, credentials, chosen)
        self._stub = service_pb2_grpc.WorkflowServiceStub(self.channel)
        self._metadata = call_metadata(metadata)

    def close(self) -> None:
        """Close the channel, if this client opened it."""
        if self._owns_channel:
            self.channel.close()

    def __enter__(self) -> WorkflowClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self,
        rpc: grpc.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        timeout: float | None,
        metadata: MetadataLike | None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> Resp:
        sent = call_metadata(
            self._metadata, metadata, traceparent=traceparent, tracestate=tracestate
        )
        try:
            return rpc(request, timeout=timeout, metadata=sent)
        except grpc.RpcError as exc:
            raise error_from_rpc_error(exc) from exc

    def list_workflows(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> rr.ListWorkflowsResponse:
        """One page of the registered workflow definitions, ordered by id."""
        request = rr.ListWorkflowsRequest(page_size=page_size, page_token=page_token)
        return self._call(self._stub.ListWorkflows, request, timeout, metadata)

    def get_workflow(
        self,
        workflow_id: str,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> message_pb2.Workflow:
        """A workflow definition: its step graph and JSON Schemas."""
        request = rr.GetWorkflowRequest(workflow_id=workflow_id)
        return self._call(self._stub.GetWorkflow, request, timeout, metadata)

    def create_run(
        self,
        workflow_id: str,
        *,
        run_id: str = "",
        resource_id: str = "",
        request_id: str = "",
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> message_pb2.Run:
        """Create a PENDING run (start it with `start_run(workflow_id, run_id=...)`)."""
        request = rr.CreateRunRequest(
            workflow_id=workflow_id, run_id=run_id, resource_id=resource_id, request_id=request_id
        )
        return self._call(self._stub.CreateRun, request, timeout, metadata)

    def start_run(
        self,
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
        traceparent: str | None = None,
        tracestate: str | None = None,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> message_pb2.WorkflowResult:
        """Start a run and wait until it settles (or not, with `return_immediately`).

        `input_data`, `initial_state` and `request_context` are JSON-like Python data.
        `traceparent` / `tracestate` (W3C trace context) are sent as call metadata, so the
        run's spans join that trace.
        """
        request = build.start_run_request(
            workflow_id,
            input_data=input_data,
            run_id=run_id,
            resource_id=resource_id,
            initial_state=initial_state,
            request_context=request_context,
            request_id=request_id,
            return_immediately=return_immediately,
            tracing_options=tracing_options,
            include_state=include_state,
            include_resume_labels=include_resume_labels,
        )
        return self._call(self._stub.StartRun, request, timeout, metadata, traceparent, tracestate)

    def resume_run(
        self,
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
        traceparent: str | None = None,
        tracestate: str | None = None,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> message_pb2.WorkflowResult:
        """Resume a suspended step with `resume_data` and wait until the run settles again.

        `step` is a path such as `["review", "legal-review"]` or `"review.legal-review"`;
        leave it out when exactly one step is suspended, or name a resume `label` instead.
        Invalid data raises `InvalidResumeDataError` and leaves the run suspended.
        """
        request = build.resume_request(
            run_id,
            resume_data=resume_data,
            step=step,
            label=label,
            foreach_index=foreach_index,
            workflow_id=workflow_id,
            request_context=request_context,
            retry_count=retry_count,
            request_id=request_id,
            validate_only=validate_only,
            expected_version=expected_version,
            tracing_options=tracing_options,
            include_state=include_state,
            include_resume_labels=include_resume_labels,
        )
        return self._call(self._stub.ResumeRun, request, timeout, metadata, traceparent, tracestate)

    def cancel_run(
        self,
        run_id: str,
        *,
        reason: str = "",
        request_id: str = "",
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> message_pb2.Run:
        """Cancel a run (a no-op on a finished run)."""
        request = rr.CancelRunRequest(run_id=run_id, reason=reason, request_id=request_id)
        return self._call(self._stub.CancelRun, request, timeout, metadata)

    def get_run(
        self,
        run_id: str,
        *,
        include_state: bool = False,
        include_resume_labels: bool = False,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> message_pb2.Run:
        """A run with its latest result."""
        options = build.output_options(include_state, include_resume_labels)
        request = rr.GetRunRequest(run_id=run_id, output_options=options)
        return self._call(self._stub.GetRun, request, timeout, metadata)

    def list_runs(
        self,
        *,
        workflow_id: str = "",
        statuses: Sequence[StatusLike] = (),
        resource_id: str = "",
        create_time_after: datetime | None = None,
        create_time_before: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> rr.ListRunsResponse:
        """One page of runs, newest first; statuses as enum values or names ("SUSPENDED")."""
        request = build.list_runs_request(
            workflow_id=workflow_id,
            statuses=statuses,
            resource_id=resource_id,
            create_time_after=create_time_after,
            create_time_before=create_time_before,
            page_size=page_size,
            page_token=page_token,
        )
        return self._call(self._stub.ListRuns, request, timeout, metadata)

    def watch_run(
        self,
        run_id: str,
        *,
        after_sequence: int = 0,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> Iterator[message_pb2.RunEvent]:
        """The run's events after `after_sequence`, until the run settles in a final state.

        To reconnect, pass the last `sequence` seen as `after_sequence`: nothing is missed.
        """
        request = rr.WatchRunRequest(run_id=run_id, after_sequence=after_sequence)
        sent = call_metadata(self._metadata, metadata)
        call = self._stub.WatchRun(request, timeout=timeout, metadata=sent)
        try:
            yield from call
        except grpc.RpcError as exc:
            raise error_from_rpc_error(exc) from exc
        finally:
            call.cancel()  # type: ignore[no-untyped-call]  # the stubs leave it unannotated

    def restart_run(
        self,
        run_id: str,
        *,
        request_context: Mapping[str, object] | None = None,
        request_id: str = "",
        tracing_options: message_pb2.TracingOptions | None = None,
        include_state: bool = False,
        include_resume_labels: bool = False,
        force: bool = False,
        traceparent: str | None = None,
        tracestate: str | None = None,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> message_pb2.WorkflowResult:
        """Continue a run that was running when its server process died.

        A run whose lease another replica still holds is refused `RunNotActiveError`;
        `force=True` takes it over anyway (only when you know that replica is dead).
        """
        request = build.restart_run_request(
            run_id,
            request_context=request_context,
            request_id=request_id,
            tracing_options=tracing_options,
            include_state=include_state,
            include_resume_labels=include_resume_labels,
            force=force,
        )
        return self._call(
            self._stub.RestartRun, request, timeout, metadata, traceparent, tracestate
        )

    def time_travel_run(
        self,
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
        traceparent: str | None = None,
        tracestate: str | None = None,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> message_pb2.WorkflowResult:
        """Re-execute a settled run from `step`, with new input or resume data."""
        request = build.time_travel_run_request(
            run_id,
            step,
            input_data=input_data,
            resume_data=resume_data,
            initial_state=initial_state,
            request_context=request_context,
            request_id=request_id,
            tracing_options=tracing_options,
            include_state=include_state,
            include_resume_labels=include_resume_labels,
        )
        return self._call(
            self._stub.TimeTravelRun, request, timeout, metadata, traceparent, tracestate
        )

    def delete_run(
        self, run_id: str, *, timeout: float | None = None, metadata: MetadataLike | None = None
    ) -> None:
        """Delete a run and its history (a running run must be canceled first)."""
        request = rr.DeleteRunRequest(run_id=run_id)
        self._call(self._stub.DeleteRun, request, timeout, metadata)
