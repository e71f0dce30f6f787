"""Registers the servicer with request decoders that cannot fail.

grpc's generated registration decodes a request with `FromString`; bytes that do not decode
(random bytes, truncated messages, invalid UTF-8, nesting beyond protobuf's limit) then end
in grpc's own UNKNOWN status, which names a Python exception class. Here a request that
does not decode becomes an `Undecodable` marker, and the servicer answers it with a clear
INVALID_ARGUMENT like any other bad input.
"""

from __future__ import annotations

from collections.abc import Callable
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
    each call in its server span."""
    service = service_pb2.DESCRIPTOR.services_by_name["WorkflowService"]
    handlers = {}
    for method in service.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        handler = getattr(servicer, method.name)
        options: dict[str, Any] = {
            "request_deserializer": _decoder(request),
            "response_serializer": response.SerializeToString,
        }
        if method.server_streaming:
            streaming = spans.streaming(method.name, handler)
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(streaming, **options)
        else:
            unary = spans.unary(method.name, handler)
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(unary, **options)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
