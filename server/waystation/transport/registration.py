"""Registers the servicer with request decoders that cannot fail.

grpc's generated registration decodes a request with `FromString`; bytes that do not decode
(random bytes, truncated messages, invalid UTF-8, nesting beyond protobuf's limit) then end
in grpc's own UNKNOWN status, which names a Python exception class. Here a request that
does not decode becomes an `Undecodable` marker, and the servicer answers it with a clear
INVALID_ARGUMENT like any other bad input.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError

from waystation.api.v1 import service_pb2
from waystation.transport.spans import ServerSpans


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request whose bytes are not a valid message."""

    reason: str


def _decoder(message_class: Any) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except (DecodeError, RecursionError, ValueError) as exc:
            return Undecodable(f"cannot decode the request as {message_class.__name__}: {exc}")

    return decode


def add_service(servicer: Any, server: grpc.aio.Server, spans: ServerSpans) -> None:
    """Like the generated `add_WorkflowServiceServicer_to_server`, with safe decoders, and
    each call in its server span (the servicer answers an undecodable request itself, with
    its rich error details)."""

    def handler(method: Any, behaviour: Any, options: dict[str, Any]) -> Any:
        if method.server_streaming:
            streaming = spans.streaming(method.name, behaviour)
            return grpc.unary_stream_rpc_method_handler(streaming, **options)
        return grpc.unary_unary_rpc_method_handler(spans.unary(method.name, behaviour), **options)

    service = service_pb2.DESCRIPTOR.services_by_name["WorkflowService"]
    _register(servicer, service, server, service.full_name, handler)


def add_checked(
    servicer: Any,
    service: Any,
    server: grpc.aio.Server,
    name: str | None = None,
    *,
    own_queue: bool = False,
) -> None:
    """Register `servicer` for `service` (a ServiceDescriptor; served as `name`, else its
    own) as its generated `add_..._to_server` would, but with decoders that cannot fail:
    a request that does not decode is INVALID_ARGUMENT. For the health and reflection
    services, whose generated registration answered UNKNOWN, naming a Python exception,
    and logged a traceback."""

    def handler(method: Any, behaviour: Any, options: dict[str, Any]) -> Any:
        if method.client_streaming and method.server_streaming:
            return grpc.stream_stream_rpc_method_handler(_checked_stream(behaviour), **options)
        if method.server_streaming:
            checked = _checked_unary_stream(behaviour)
            return grpc.unary_stream_rpc_method_handler(checked, **options)
        return grpc.unary_unary_rpc_method_handler(_checked_unary(behaviour), **options)

    _register(servicer, service, server, name or service.full_name, handler, own_queue)


def _register(
    servicer: Any,
    service: Any,
    server: grpc.aio.Server,
    name: str,
    handler: Callable[[Any, Any, dict[str, Any]], Any],
    own_queue: bool = False,
) -> None:
    """Serve each method of `service` (a ServiceDescriptor) as `name`, by the handler that
    `handler(method, servicer's method, codec options)` makes, with a safe decoder.

    With `own_queue`, each method is registered with gRPC's core rather than served by a
    generic handler. grpc.aio takes a new call off core's queue once per turn of the event
    loop, and under load calls wait there; generic handlers share one queue, so a health
    check waited behind every StartRun received before it (over a second with 1,200 in
    flight: a Kubernetes probe failed). A registered method has a queue of its own, but
    costs grpc.aio about 0.1 M instructions more per call (3 % of a start-and-resume
    cycle): the health service has one, the WorkflowService not."""
    handlers = {}
    for method in service.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        options: dict[str, Any] = {
            "request_deserializer": _decoder(request),
            "response_serializer": response.SerializeToString,
        }
        handlers[method.name] = handler(method, getattr(servicer, method.name), options)
    if own_queue:
        server.add_registered_method_handlers(name, handlers)  # type: ignore[attr-defined]
    else:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))


async def _refuse(request: Any, context: Any) -> None:
    if isinstance(request, Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)


def _checked_unary(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    async def unary(request: Any, context: Any) -> Any:
        await _refuse(request, context)
        return await behaviour(request, context)

    return unary


def _checked_unary_stream(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    """A server-streaming `behaviour` that yields its answers, or writes them itself
    (health's Watch does), as one that writes them."""

    async def unary_stream(request: Any, context: Any) -> None:
        await _refuse(request, context)
        answers = behaviour(request, context)
        if inspect.isasyncgen(answers):
            async for answer in answers:
                await context.write(answer)
        else:
            await answers

    return unary_stream


def _checked_stream(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    async def stream(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async def checked() -> AsyncIterator[Any]:
            async for request in requests:
                await _refuse(request, context)
                yield request

        async for answer in behaviour(checked(), context):
            yield answer

    return stream
