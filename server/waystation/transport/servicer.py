"""The grpc.aio servicer: requests to engine commands, results to responses.

Every method is wrapped by `handle_errors`, the one place where errors become statuses.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry import trace

from waystation.api.v1 import message_pb2, request_response_pb2, service_pb2_grpc
from waystation.engine import (
    Engine,
    ResumeCommand,
    RunStatus,
    StartCommand,
    TimeTravelCommand,
    schema,
)
from waystation.engine.engine import check_page_size, read_page_token
from waystation.engine.errors import (
    InvalidArgument,
    Unauthenticated,
    Violations,
    WaystationError,
)
from waystation.engine.ids import check_new_run_id, check_run_id, check_workflow_id
from waystation.engine.tracing import CallTrace
from waystation.storage import RunFilter
from waystation.transport import convert
from waystation.transport.auth import ANONYMOUS, AuthPolicy, Principal, authorize
from waystation.transport.errors import (
    abort_for,
    check_fits,
    handle_errors,
    reject_malformed,
)
from waystation.transport.workflows import workflow_to_proto

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
rr = request_response_pb2

_REFUSED: dict[str, Any] = {}
"""What a field whose check failed reads as: never used, the request is refused first."""


class WorkflowService(service_pb2_grpc.WorkflowServiceServicer):
    def __init__(
        self, engine: Engine, policy: AuthPolicy | None = None, max_message_bytes: int = 0
    ) -> None:
        self.engine = engine
        self.policy = policy or AuthPolicy()
        self.max_message_bytes = max_message_bytes
        """The largest message the server sends (0: no limit): a larger answer is refused
        RESOURCE_EXHAUSTED RESPONSE_TOO_LARGE, with details, by `handle_errors`."""
        self.max_payload_bytes = max_message_bytes // 8
        """Largest user payload (input, state, context, resume data) a request may carry:
        a fraction of the message limit, so that the answer, which repeats it, fits unless
        the steps make it much larger."""

    def _check_sizes(self, problems: Violations, request: Any, *fields: str) -> None:
        """Each payload, and all of them together, at most `max_payload_bytes`."""
        limit = self.max_payload_bytes
        if not limit:
            return
        sizes = {f: getattr(request, f).ByteSize() for f in fields if request.HasField(f)}
        for field, size in sizes.items():
            if size > limit:
                problems.add(field, f"larger than {limit} bytes")
        total = sum(sizes.values())
        if total > limit and all(size <= limit for size in sizes.values()):
            for field in sizes:
                problems.add(
                    field,
                    f"with {', '.join(sorted(set(sizes) - {field}))}: {total} bytes,"
                    f" more than the {limit} a request's payloads may take together",
                )

    async def _guard(
        self, context: Context, action: str, *, run_id: str = "", resource_id: str | None = None
    ) -> Principal:
        """Authenticate the caller and check `action` (on `run_id` / a new run's resource).
        With a policy, the credential's name goes on the call's span and in the log: every
        call at DEBUG, a refused one at INFO."""
        if not self.policy.enabled:
            return ANONYMOUS
        try:
            principal = self.policy.authenticate(
                context.invocation_metadata(), lambda: _peer(context)
            )
        except Unauthenticated as exc:
            log.info("refused %s from %s: %s", action, context.peer(), exc.message)
            raise
        trace.get_current_span().set_attribute("enduser.id", principal.name)
        run = None
        if run_id and principal.prefixes:
            run = await self.engine.store.load_run(run_id)
        if run is not None and action == "start" and not resource_id:
            resource_id = None  # a PENDING run starts under its own resource
        try:
            authorize(principal, action, resource_id=resource_id, run=run)
        except WaystationError as exc:
            log.info("refused %s %s to %s: %s", action, run_id, principal.name, exc.reason)
            raise
        log.debug("%s %s by %s", action, run_id, principal.name)
        return principal

    @handle_errors
    async def ListWorkflows(
        self, request: rr.ListWorkflowsRequest, context: Context
    ) -> rr.ListWorkflowsResponse:
        await self._guard(context, "read")
        workflows = self.engine.workflows()
        problems = Violations()
        start = problems.check(_offset_token, request.page_token, default=0)
        problems.check(check_page_size, request.page_size, default=None)
        problems.raise_any()
        size = request.page_size or 100
        page = workflows[start : start + min(size, 1000)]
        more = start + len(page) < len(workflows)
        return rr.ListWorkflowsResponse(
            workflows=[workflow_to_proto(wf) for wf in page],
            next_page_token=str(start + len(page)) if more else "",
        )

    @handle_errors
    async def GetWorkflow(
        self, request: rr.GetWorkflowRequest, context: Context
    ) -> message_pb2.Workflow:
        await self._guard(context, "read")
        return workflow_to_proto(self.engine.workflow(request.workflow_id))

    @handle_errors
    async def CreateRun(self, request: rr.CreateRunRequest, context: Context) -> message_pb2.Run:
        await self._guard(context, "start", run_id=request.run_id, resource_id=request.resource_id)
        problems = Violations()
        problems.check(check_workflow_id, request.workflow_id, default=None)
        problems.check(check_new_run_id, request.run_id, default=None)
        problems.raise_any()
        run = await self.engine.create_run(
            request.workflow_id, request.run_id, request.resource_id, request.request_id
        )
        return convert.run_to_proto(run)

    @handle_errors
    async def StartRun(
        self, request: rr.StartRunRequest, context: Context
    ) -> message_pb2.WorkflowResult:
        await self._guard(context, "start", run_id=request.run_id, resource_id=request.resource_id)
        problems = Violations()
        problems.check(check_workflow_id, request.workflow_id, default=None)
        problems.check(check_new_run_id, request.run_id, default=None)
        self._check_sizes(problems, request, "input_data", "initial_state", "request_context")
        command = StartCommand(
            workflow_id=request.workflow_id,
            run_id=request.run_id,
            resource_id=request.resource_id,
            input_data=problems.check(_value, request, "input_data", default=None),
            initial_state=problems.check(_struct, request, "initial_state", default=_REFUSED),
            request_context=problems.check(_struct, request, "request_context", default=_REFUSED),
            request_id=request.request_id,
            return_immediately=request.return_immediately,
            trace=problems.check(_trace, request, context, default=None),
        )
        problems.raise_any()
        result = await self.engine.start_run(command)
        return convert.result_to_proto(result, request.output_options)

    @handle_errors
    async def ResumeRun(
        self, request: rr.ResumeRequest, context: Context
    ) -> message_pb2.WorkflowResult:
        principal = await self._guard(context, "resume", run_id=request.run_id)
        problems = Violations()
        problems.check(check_run_id, request.run_id, default=None)
        self._check_sizes(problems, request, "resume_data", "request_context")
        command = ResumeCommand(
            run_id=request.run_id,
            workflow_id=request.workflow_id,
            resume_data=problems.check(_value, request, "resume_data", default=None),
            step=convert.path_from_proto(request.step),
            label=request.label,
            foreach_index=request.foreach_index if request.HasField("foreach_index") else None,
            request_context=problems.check(_struct, request, "request_context", default=_REFUSED),
            retry_count=problems.check(
                _non_negative, "retry_count", request.retry_count, default=0
            ),
            request_id=request.request_id,
            validate_only=request.validate_only,
            expected_version=(
                request.expected_version if request.HasField("expected_version") else None
            ),
            trace=problems.check(_trace, request, context, default=None),
            actor=principal.name,
        )
        problems.raise_any()
        result = await self.engine.resume_run(command)
        return convert.result_to_proto(result, request.output_options)

    @handle_errors
    async def CancelRun(self, request: rr.CancelRunRequest, context: Context) -> message_pb2.Run:
        await self._guard(context, "cancel", run_id=request.run_id)
        result = await self.engine.cancel_run(request.run_id, request.reason)
        run, _ = await self.engine.get_run(result.run_id)
        return convert.run_to_proto(run, result)

    @handle_errors
    async def GetRun(self, request: rr.GetRunRequest, context: Context) -> message_pb2.Run:
        await self._guard(context, "read", run_id=request.run_id)
        run, result = await self.engine.get_run(request.run_id)
        return convert.run_to_proto(run, result, request.output_options)

    @handle_errors
    async def ListRuns(self, request: rr.ListRunsRequest, context: Context) -> rr.ListRunsResponse:
        principal = await self._guard(context, "read")
        problems = Violations()
        where = RunFilter(
            workflow_id=request.workflow_id,
            statuses=[
                problems.check(_run_status, s, default=RunStatus.PENDING) for s in request.statuses
            ],
            resource_id=request.resource_id,
            created_after=problems.check(_time_or_none, request, "create_time_after", default=None),
            created_before=problems.check(
                _time_or_none, request, "create_time_before", default=None
            ),
            resource_prefixes=principal.prefixes,
        )
        problems.check(check_page_size, request.page_size, default=None)
        problems.check(read_page_token, request.page_token, default=None)
        problems.raise_any()  # a token made for other filters is the engine's to refuse
        runs, token = await self.engine.list_runs(where, request.page_size, request.page_token)
        return rr.ListRunsResponse(
            runs=[convert.run_to_proto(r) for r in runs], next_page_token=token
        )

    async def WatchRun(
        self, request: rr.WatchRunRequest, context: Context
    ) -> AsyncIterator[message_pb2.RunEvent]:
        try:
            reject_malformed(request)
            await self._guard(context, "read", run_id=request.run_id)
            problems = Violations()
            problems.check(check_run_id, request.run_id, default=None)
            problems.check(_non_negative, "after_sequence", request.after_sequence, default=0)
            problems.raise_any()
            async for event in self.engine.watch(request.run_id, request.after_sequence):
                message = convert.event_to_proto(request.run_id, event)
                yield check_fits(message, self.max_message_bytes, "WatchRun")
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_for(exc, context, "WatchRun")

    @handle_errors
    async def RestartRun(
        self, request: rr.RestartRunRequest, context: Context
    ) -> message_pb2.WorkflowResult:
        await self._guard(context, "admin", run_id=request.run_id)
        problems = Violations()
        problems.check(check_run_id, request.run_id, default=None)
        request_context = problems.check(_struct, request, "request_context", default=_REFUSED)
        trace = problems.check(_trace, request, context, default=None)
        problems.raise_any()
        result = await self.engine.restart_run(
            request.run_id, request_context, trace, request.request_id, force=request.force
        )
        return convert.result_to_proto(result, request.output_options)

    @handle_errors
    async def TimeTravelRun(
        self, request: rr.TimeTravelRunRequest, context: Context
    ) -> message_pb2.WorkflowResult:
        await self._guard(context, "admin", run_id=request.run_id)
        problems = Violations()
        problems.check(check_run_id, request.run_id, default=None)
        sized = ("input_data", "resume_data", "initial_state", "request_context")
        self._check_sizes(problems, request, *sized)
        command = TimeTravelCommand(
            run_id=request.run_id,
            step=convert.path_from_proto(request.step),
            input_data=problems.check(_value, request, "input_data", default=None),
            resume_data=problems.check(_value, request, "resume_data", default=None),
            initial_state=(
                problems.check(_struct, request, "initial_state", default=_REFUSED)
                if request.HasField("initial_state")
                else None
            ),
            request_context=problems.check(_struct, request, "request_context", default=_REFUSED),
            trace=problems.check(_trace, request, context, default=None),
            request_id=request.request_id,
        )
        problems.raise_any()
        result = await self.engine.time_travel_run(command)
        return convert.result_to_proto(result, request.output_options)

    @handle_errors
    async def DeleteRun(
        self, request: rr.DeleteRunRequest, context: Context
    ) -> rr.DeleteRunResponse:
        await self._guard(context, "admin", run_id=request.run_id)
        await self.engine.delete_run(request.run_id)
        return rr.DeleteRunResponse()


def _peer(context: Context) -> list[str]:
    """The identities of a mutual-TLS client certificate: common name and subject
    alternative names."""
    auth = context.auth_context() or {}
    names = [*auth.get("x509_common_name", []), *auth.get("x509_subject_alternative_name", [])]
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _trace(request: Any, context: Context) -> CallTrace:
    return convert.call_trace(request.tracing_options, context.invocation_metadata())


def _value(request: Any, field: str) -> Any:
    """A Value field as JSON (None when unset), at most MAX_NESTING levels deep."""
    return _nested(field, convert.optional_value(request, field))


def _struct(request: Any, field: str) -> dict[str, Any]:
    """A Struct field as JSON, at most MAX_NESTING levels deep."""
    data: dict[str, Any] = _nested(field, convert.struct_to_json(getattr(request, field), field))
    return data


def _nested(field: str, data: Any) -> Any:
    """`data`, unless it nests deeper than an answer repeating it could carry."""
    try:
        schema.check_nesting(data)
    except ValueError as exc:
        raise InvalidArgument(field, str(exc)) from None
    return data


def _non_negative(field: str, value: int) -> int:
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    return value


def _run_status(value: int) -> RunStatus:
    status: RunStatus | None = convert.RUN_STATUS_FROM_PROTO.get(value)  # type: ignore[call-overload]
    if status is None:
        raise InvalidArgument("statuses", f"unknown run status {value}")
    return status


def _time_or_none(request: Any, field: str) -> float | None:
    if not request.HasField(field):
        return None
    try:
        return convert.seconds(getattr(request, field))
    except ValueError as exc:
        raise InvalidArgument(field, f"not a valid timestamp: {exc}") from exc


def _offset_token(token: str) -> int:
    if not token:
        return 0
    if not (token.isascii() and token.isdecimal() and len(token) <= 9):
        raise InvalidArgument("page_token", "malformed page token")
    return int(token)
