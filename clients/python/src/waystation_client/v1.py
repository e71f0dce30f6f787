"""The generated modules of the `waystation.v1` API, for direct use of the messages and stubs.

from waystation_client.v1 import request_response_pb2, service_pb2_grpc

stub = service_pb2_grpc.WorkflowServiceStub(channel)
stub.GetRun(request_response_pb2.GetRunRequest(run_id="..."))
"""

from waystation_client._gen.waystation.v1 import (
    enums_pb2,
    errordetails_pb2,
    message_pb2,
    request_response_pb2,
    service_pb2,
    service_pb2_grpc,
)

__all__ = [
    "enums_pb2",
    "errordetails_pb2",
    "message_pb2",
    "request_response_pb2",
    "service_pb2",
    "service_pb2_grpc",
]
