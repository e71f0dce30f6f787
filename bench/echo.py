"""The gRPC floor: a grpc.aio server with one unary method that answers at once.

`python -m bench.echo --port N` serves `/bench.Echo/Echo`, a generic handler that reads a
`waystation.v1.GetWorkflowRequest` and answers a `waystation.v1.Workflow` carrying the same
id: the cheapest call grpc.aio can serve with the project's own messages (no interceptors,
no engine, no store).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc

from waystation.api.v1 import message_pb2, request_response_pb2

METHOD = "/bench.Echo/Echo"


async def _echo(request: request_response_pb2.GetWorkflowRequest, context: Any) -> Any:
    return message_pb2.Workflow(workflow_id=request.workflow_id)


def handler() -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
    method = grpc.unary_unary_rpc_method_handler(
        _echo,
        request_deserializer=request_response_pb2.GetWorkflowRequest.FromString,
        response_serializer=message_pb2.Workflow.SerializeToString,
    )
    return grpc.method_handlers_generic_handler("bench.Echo", {"Echo": method})


async def serve(port: int) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
