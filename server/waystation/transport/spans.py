"""The server span of each WorkflowService call, continuing the caller's W3C trace context.

What OpenTelemetry's grpc.aio server interceptor did for this service, without running
through grpc's interceptor chain on every call (that machinery was about 5 % of a cycle's
CPU, docs/performance.md): the `traceparent`, `tracestate` and `baggage` metadata are
extracted with the global propagator, and the handler runs inside a SERVER span named
`/waystation.v1.WorkflowService/Method`, current for everything the call does (the run and
step spans are its children; log lines carry its ids). The span records the
`rpc.grpc.status_code` the call ended with, and an ERROR status for the codes the
OpenTelemetry semantic conventions count as server errors. Health checks and reflection
are not traced.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

Unary = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
Streaming = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncGenerator[Any, None]]

SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class ServerSpans:
    """Wraps the handlers of one service so that each call runs in its server span."""

    def __init__(self, tracer_provider: trace.TracerProvider | None, service: str) -> None:
        self._tracer = trace.get_tracer("waystation.transport", tracer_provider=tracer_provider)
        self._service = service

    def _start(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> trace.Span:
        carrier = {key: value for key, value in context.invocation_metadata() or ()}
        return self._tracer.start_span(
            f"/{self._service}/{method}",
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": self._service,
                "rpc.method": method,
            },
            record_exception=False,
            set_status_on_exception=False,
        )

    def unary(self, method: str, handler: Unary) -> Unary:
        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            span, budget = self._start(method, context), context.time_remaining()
            cancelled = False
            try:
                with _current(span):
                    return await handler(request, context)
            except asyncio.CancelledError:  # the client went away, or its deadline passed
                cancelled = True
                raise
            finally:
                _end(span, context, cancelled, budget)

        return traced

    def streaming(self, method: str, handler: Streaming) -> Streaming:
        async def traced(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncGenerator[Any, None]:
            span, budget = self._start(method, context), context.time_remaining()
            cancelled = False
            messages = handler(request, context)
            try:
                while True:
                    # Current only while the handler runs: a stream the client cancels is
                    # closed from another context, where a context attached across the
                    # `yield` could not be detached (OpenTelemetry logs that as an error).
                    with _current(span):
                        try:
                            message = await anext(messages)
                        except StopAsyncIteration:
                            break
                    yield message
            except (asyncio.CancelledError, GeneratorExit):  # the client went away
                cancelled = True
                raise
            finally:
                with _current(span):
                    await messages.aclose()
                _end(span, context, cancelled, budget)

        return traced


def _current(span: trace.Span) -> Any:
    """`span` as the current span; its status and end are `_end`'s business."""
    return trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


def _end(
    span: trace.Span,
    context: grpc.aio.ServicerContext[Any, Any],
    cancelled: bool,
    budget: float | None,
) -> None:
    """Record the status the call ended with: the one the handler set or aborted with, OK
    if none, DEADLINE_EXCEEDED if the call ran out of time before it answered, CANCELLED if
    the client went away first. `budget`: the call's time left when it arrived."""
    code = context.code() or grpc.StatusCode.OK  # None until a handler sets or aborts
    if (cancelled or context.cancelled()) and code is grpc.StatusCode.OK:
        left = context.time_remaining()  # None without a deadline
        code = (
            grpc.StatusCode.DEADLINE_EXCEEDED
            if _out_of_time(left, budget)
            else grpc.StatusCode.CANCELLED
        )
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


def _out_of_time(left: float | None, budget: float | None) -> bool:
    """Whether a call cut short had run out of time. The client's deadline passes first,
    and its cancel reaches the server a little before the server's own deadline: that one
    counts from when the call arrived, and grpc rounds a timeout up as it sends it (by up to
    1 %: to 10 ms between 1 and 10 s, ...). So the last 20 ms and 2 % of a call's time count
    as out of time; a client that gives up on its own that close to its deadline is rare."""
    if left is None or budget is None:
        return False
    return left <= 0.02 + 0.02 * budget
