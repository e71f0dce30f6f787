"""Server reflection, in both of its versions.

grpcio-reflection serves `grpc.reflection.v1alpha` only. Newer tools (grpcurl, grpcui,
Postman, grpc-java's ProtoReflectionService clients) ask `grpc.reflection.v1` first and fall
back; some do not fall back. The two versions' messages are the same fields under another
package, so v1 is served here by the same servicer, its messages decoded and encoded with
v1alpha's classes, and its descriptor (v1alpha's, renamed) added to the default pool so that
reflection describes it too.

The servicer also finds a method by its full name (`waystation.v1.WorkflowService.StartRun`,
what grpcurl's `describe Service.Method` asks for, and what Go's and Java's reflection
answer): protobuf's upb descriptor pool finds services, messages, fields and enum values by
name, but not methods, so grpcio-reflection alone answered NOT_FOUND.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import Message
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

from waystation.transport.registration import add_checked

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_V1ALPHA = "grpc.reflection.v1alpha"
_V1 = "grpc.reflection.v1"


def enable(services: list[str], server: grpc.aio.Server) -> None:
    """Serve reflection (v1 and v1alpha) for `services` and for itself."""
    _add_v1_descriptor()
    names = [*services, reflection.SERVICE_NAME, V1_SERVICE_NAME]
    servicer = _Reflection(names)
    service = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
    add_checked(servicer, service, server)
    add_checked(servicer, service, server, V1_SERVICE_NAME)


class _Reflection(ReflectionServicer):  # type: ignore[misc]  # grpcio-reflection is untyped
    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        """A method's name is answered with its service's file."""
        service, _, method = fully_qualified_name.rpartition(".")
        try:
            if method in self._pool.FindServiceByName(service).methods_by_name:
                fully_qualified_name = service
        except KeyError:
            pass
        return super()._file_containing_symbol(request, fully_qualified_name)


def _add_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(V1_SERVICE_NAME)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto.FromString(reflection_pb2.DESCRIPTOR.serialized_pb)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = _V1
    _rename(proto)
    pool.Add(proto)


def _rename(message: Any) -> None:
    """Point every type reference in `message` (a descriptor proto) at the v1 package."""
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            for item in [value] if isinstance(value, Message) else value:
                _rename(item)
        elif field.name in ("type_name", "input_type", "output_type"):
            setattr(message, field.name, value.replace(f".{_V1ALPHA}.", f".{_V1}."))
