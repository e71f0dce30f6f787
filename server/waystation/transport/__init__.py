"""Transport: the grpc.aio servicer, the error table, and the server's lifecycle."""

from waystation.transport.server import RunningServer, ServerSettings, create_server, serve
from waystation.transport.servicer import WorkflowService

__all__ = ["RunningServer", "ServerSettings", "WorkflowService", "create_server", "serve"]
