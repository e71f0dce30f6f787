"""A Python client for Waystation, the durable workflow engine served over gRPC.

    from waystation_client import WorkflowClient, from_value

    with WorkflowClient("127.0.0.1:50051") as client:
        result = client.start_run("document-review", input_data={"document_id": "d-1", ...})
        path = list(result.suspended[0].segments)          # ["review", "legal-review"]
        result = client.resume_run(result.run_id, step=path, resume_data={...})
        print(from_value(result.result))

`AsyncWorkflowClient` is the same client for asyncio. Calls return the generated messages
(`WorkflowResult`, `Run`, ...), and raise `WaystationError` subclasses built from the
status details (`InvalidResumeDataError.field_violations`, `StepAmbiguousError.suspended`).
"""

from waystation_client._aio import AsyncWorkflowClient
from waystation_client._errors import (
    AbortedError,
    AlreadyExistsError,
    CallCancelledError,
    ConflictError,
    DeadlineExceededError,
    EarlierStepSuspendedError,
    FailedPreconditionError,
    ForeachIndexNotSuspendedError,
    InternalError,
    InvalidArgumentError,
    InvalidDataError,
    InvalidInputError,
    InvalidResumeDataError,
    LabelNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    ResourceExhaustedError,
    ResponseTooLargeError,
    ResumeConflictError,
    RunActiveError,
    RunAlreadyExistsError,
    RunChangedError,
    RunNotActiveError,
    RunNotFoundError,
    RunNotSuspendedError,
    ServerDrainingError,
    StepAmbiguousError,
    StepNotSuspendedError,
    StoreUnavailableError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    VersionMismatchError,
    WaystationError,
    WorkflowChangedError,
    WorkflowNotFoundError,
    error_from_rpc_error,
)
from waystation_client._gen.waystation.v1.enums_pb2 import (
    RunEventType,
    RunStatus,
    StepKind,
    StepStatus,
)
from waystation_client._gen.waystation.v1.errordetails_pb2 import SuspendedStepsDetail
from waystation_client._gen.waystation.v1.message_pb2 import (
    ResumeLabel,
    Run,
    RunError,
    RunEvent,
    StepNode,
    StepPath,
    StepResult,
    TracingOptions,
    Workflow,
    WorkflowResult,
)
from waystation_client._gen.waystation.v1.request_response_pb2 import (
    ListRunsResponse,
    ListWorkflowsResponse,
)
from waystation_client._requests import MetadataLike, StepLike, step_path
from waystation_client._sync import WorkflowClient
from waystation_client._values import from_struct, from_value, result_json, to_struct, to_value

__version__ = "0.1.0"

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "AsyncWorkflowClient",
    "CallCancelledError",
    "ConflictError",
    "DeadlineExceededError",
    "EarlierStepSuspendedError",
    "FailedPreconditionError",
    "ForeachIndexNotSuspendedError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidDataError",
    "InvalidInputError",
    "InvalidResumeDataError",
    "LabelNotFoundError",
    "ListRunsResponse",
    "ListWorkflowsResponse",
    "MetadataLike",
    "NotFoundError",
    "PermissionDeniedError",
    "PreconditionError",
    "ResourceExhaustedError",
    "ResponseTooLargeError",
    "ResumeConflictError",
    "ResumeLabel",
    "Run",
    "RunActiveError",
    "RunAlreadyExistsError",
    "RunChangedError",
    "RunError",
    "RunEvent",
    "RunEventType",
    "RunNotActiveError",
    "RunNotFoundError",
    "RunNotSuspendedError",
    "RunStatus",
    "ServerDrainingError",
    "StepAmbiguousError",
    "StepKind",
    "StepLike",
    "StepNode",
    "StepNotSuspendedError",
    "StepPath",
    "StepResult",
    "StepStatus",
    "StoreUnavailableError",
    "SuspendedStepsDetail",
    "TracingOptions",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "VersionMismatchError",
    "WaystationError",
    "Workflow",
    "WorkflowChangedError",
    "WorkflowClient",
    "WorkflowNotFoundError",
    "WorkflowResult",
    "error_from_rpc_error",
    "from_struct",
    "from_value",
    "result_json",
    "step_path",
    "to_struct",
    "to_value",
]
