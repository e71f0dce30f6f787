"""The standard gRPC health service and server reflection, as grpcurl and load balancers use
them, through a real server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.conftest import settings_for
from tests.support.api import value
from waystation.api.v1 import enums_pb2, service_pb2_grpc
from waystation.api.v1 import request_response_pb2 as rr
from waystation.transport import RunningServer, create_server

SERVICE = "waystation.v1.WorkflowService"


async def reflect(
    channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    """One request on the bidirectional reflection stream, and its answer."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo()
    await call.write(request)
    await call.done_writing()
    responses = [response async for response in call]
    assert len(responses) == 1
    return responses[0]


async def test_health_answers_serving_for_the_server_and_the_workflow_service(
    channel: grpc.aio.Channel,
) -> None:
    """The standard health service reports SERVING for the whole server ("") and for
    waystation.v1.WorkflowService."""
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_health_of_an_unknown_service_is_not_found(channel: grpc.aio.Channel) -> None:
    """The health service answers NOT_FOUND for a service the server does not serve."""
    health = health_pb2_grpc.HealthStub(channel)
    try:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
    else:
        raise AssertionError("health check of an unknown service succeeded")


async def test_reflection_lists_the_workflow_service(channel: grpc.aio.Channel) -> None:
    """Server reflection lists waystation.v1.WorkflowService (with health and reflection)."""
    response = await reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))

    names = {s.name for s in response.list_services_response.service}
    assert SERVICE in names
    assert "grpc.health.v1.Health" in names


async def test_reflection_returns_the_service_file_by_symbol(channel: grpc.aio.Channel) -> None:
    """file_containing_symbol for the service returns the descriptor of
    waystation/v1/service.proto with all of its RPCs: what grpcurl needs to call it."""
    response = await reflect(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)
    )

    files = {}
    for raw in response.file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        files[proto.name] = proto
    service_file = files["waystation/v1/service.proto"]
    assert service_file.package == "waystation.v1"
    [service] = service_file.service
    assert service.name == "WorkflowService"
    methods = {m.name: m for m in service.method}
    assert {"StartRun", "ResumeRun", "GetRun", "ListRuns", "CancelRun", "WatchRun"} <= set(methods)
    assert methods["ResumeRun"].input_type == ".waystation.v1.ResumeRequest"
    assert methods["ResumeRun"].output_type == ".waystation.v1.WorkflowResult"


def _reflected_resume_classes(address: str) -> tuple[Any, Any, int]:
    """With a sync channel and reflection only: the ResumeRun request and response classes
    and the number of RUN_STATUS_SUCCESS. Runs in a thread (the server shares our loop)."""
    with grpc.insecure_channel(address) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        # Asked for by service name first: the reflection server looks symbols up in the
        # upb default pool, which does not find files by a method's full name.
        assert pool.FindServiceByName(SERVICE).methods_by_name["ResumeRun"]
        method = pool.FindMethodByName(f"{SERVICE}.ResumeRun")
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        success = pool.FindEnumTypeByName("waystation.v1.RunStatus").values_by_name[
            "RUN_STATUS_SUCCESS"
        ]
        return request_class, response_class, success.number


async def test_a_client_resumes_a_run_with_reflected_descriptors_alone(
    server: RunningServer, stub: service_pb2_grpc.WorkflowServiceStub
) -> None:
    """A client with no generated code builds a ResumeRequest from reflected descriptors,
    sends it, and reads the WorkflowResult it gets back: the run finishes SUCCESS."""
    started = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="order-approval", input_data=value({"order_id": "R-1", "amount": 120})
        )
    )
    assert started.status == enums_pb2.RUN_STATUS_SUSPENDED
    address = f"127.0.0.1:{server.port}"

    request_class, response_class, success = await asyncio.to_thread(
        _reflected_resume_classes, address
    )
    assert request_class.DESCRIPTOR.full_name == "waystation.v1.ResumeRequest"
    request = json_format.ParseDict(
        {
            "runId": started.run_id,
            "label": "manager",
            "resumeData": {"approved": True, "approver": "rosa"},
        },
        request_class(),
    )

    async with grpc.aio.insecure_channel(address) as channel:
        resume = channel.unary_unary(
            f"/{SERVICE}/ResumeRun",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        result = await resume(request)

    assert result.status == success
    assert json_format.MessageToDict(result.result) == {
        "order_id": "R-1",
        "status": "fulfilled",
        "approver": "rosa",
    }


async def test_health_list_names_every_service_and_its_status(
    channel: grpc.aio.Channel, caplog: Any
) -> None:
    """Health/List, which reflection advertises, answers every service with its status
    (grpcio's servicer left it UNIMPLEMENTED, with an error in the log for each call)."""
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.List(health_pb2.HealthListRequest())
    serving = health_pb2.HealthCheckResponse.SERVING
    assert {name: s.status for name, s in response.statuses.items()} == {
        "": serving,
        SERVICE: serving,
    }
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_health_list_reports_a_drain_for_good(
    server: RunningServer, channel: grpc.aio.Channel
) -> None:
    """Once the server drains, List answers NOT_SERVING for every service, as Check does,
    and a later `set` does not bring a service back."""
    health = health_pb2_grpc.HealthStub(channel)
    await server.health.enter_graceful_shutdown()
    await server.health.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    response = await health.List(health_pb2.HealthListRequest())
    statuses = {name: s.status for name, s in response.statuses.items()}
    assert statuses == dict.fromkeys(("", SERVICE), health_pb2.HealthCheckResponse.NOT_SERVING)
    checked = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert checked.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_drain_ends_health_watches_once_they_have_seen_not_serving(
    db_path: Path,
) -> None:
    """A health Watch (client-side health checking keeps one open on every server) gets
    NOT_SERVING when the server drains, then ends UNAVAILABLE, as a drain ends a WatchRun:
    it held every drain open for the whole grace. A watch of a service the server does
    not know still streams SERVICE_UNKNOWN until then."""
    running = await create_server(settings_for(db_path))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watches = [health.Watch(health_pb2.HealthCheckRequest(service=s)) for s in ("", "x")]
            # Iterated, not read(): read() raises as soon as the call has ended, before the
            # messages that came with it are read.
            streams = [aiter(watch) for watch in watches]
            first = [(await anext(stream)).status for stream in streams]
            assert first == [
                health_pb2.HealthCheckResponse.SERVING,
                health_pb2.HealthCheckResponse.SERVICE_UNKNOWN,
            ]
            began = time.monotonic()
            stopping = asyncio.ensure_future(running.stop(grace=30))
            seen = await health_statuses(streams[0])
            assert seen == [health_pb2.HealthCheckResponse.NOT_SERVING]
            assert await watches[0].code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.wait_for(stopping, timeout=10)
            assert time.monotonic() - began < 10
    finally:
        await running.stop(grace=0)


async def health_statuses(stream: Any) -> list[int]:
    """The statuses a health Watch streams until it ends (its error is kept by the call)."""
    out = []
    with contextlib.suppress(grpc.aio.AioRpcError):
        async for response in stream:
            out.append(response.status)
    return out


@pytest.mark.parametrize("version", ["v1alpha", "v1"])
async def test_reflection_finds_a_method_by_its_full_name(
    channel: grpc.aio.Channel, version: str
) -> None:
    """grpcurl's `describe waystation.v1.WorkflowService.ResumeRun` asks for the file that
    holds the method's full name: it is its service's file (also for health's methods). A
    name that is no method stays NOT_FOUND."""
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )()
    symbols = [f"{SERVICE}.ResumeRun", "grpc.health.v1.Health.Check", f"{SERVICE}.NoSuchRpc"]
    for symbol in symbols:
        await call.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
    await call.done_writing()
    resume, check, missing = [response async for response in call]

    for response, (name, service) in [
        (resume, ("waystation/v1/service.proto", "WorkflowService")),
        (check, ("grpc_health/v1/health.proto", "Health")),
    ]:
        raw = response.file_descriptor_response.file_descriptor_proto
        assert raw, response
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw[0])
        assert (proto.name, proto.service[0].name) == (name, service)
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_reflection_v1_answers_as_v1alpha_does(channel: grpc.aio.Channel) -> None:
    """Newer tools ask grpc.reflection.v1 first (some do not fall back to v1alpha, the only
    version grpcio-reflection serves): it lists the services and describes itself."""
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    await call.write(
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.reflection.v1.ServerReflection"
        )
    )
    await call.done_writing()
    listed, described = [response async for response in call]
    names = {service.name for service in listed.list_services_response.service}
    assert {SERVICE, "grpc.reflection.v1.ServerReflection"} <= names
    files = described.file_descriptor_response.file_descriptor_proto
    proto = descriptor_pb2.FileDescriptorProto.FromString(files[0])
    assert (proto.package, proto.service[0].name) == ("grpc.reflection.v1", "ServerReflection")
    assert proto.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"


@pytest.mark.parametrize(
    ("method", "kind"),
    [
        ("/grpc.health.v1.Health/Check", "unary"),
        ("/grpc.health.v1.Health/List", "unary"),
        ("/grpc.health.v1.Health/Watch", "server-stream"),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "bidi"),
        ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "bidi"),
    ],
)
async def test_bytes_that_are_no_request_are_invalid_argument_for_health_and_reflection(
    channel: grpc.aio.Channel, method: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As for the WorkflowService: grpc's generated registration answered UNKNOWN, naming
    a Python exception (DecodeError), and logged a traceback for each call. Health and
    reflection still answer well-formed requests afterwards."""
    raw = {"request_serializer": lambda data: data, "response_deserializer": lambda data: data}
    garbage = b"\xff\xff"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        if kind == "unary":
            await channel.unary_unary(method, **raw)(garbage)
        elif kind == "server-stream":
            async for _ in channel.unary_stream(method, **raw)(garbage):
                pass
        else:
            call = channel.stream_stream(method, **raw)()
            await call.write(garbage)
            await call.done_writing()
            async for _ in call:
                pass
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode the request" in (refused.value.details() or "")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    health = health_pb2_grpc.HealthStub(channel)
    checked = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    listed = await reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    assert SERVICE in [s.name for s in listed.list_services_response.service]
