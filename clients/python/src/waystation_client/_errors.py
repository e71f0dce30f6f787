"""Typed errors, built from the `google.rpc.Status` details of a failed call.

Every client call turns a `grpc.RpcError` into one of these (the original stays as
`__cause__`). The class is chosen by the `google.rpc.ErrorInfo` reason; without a known
reason, by the status code; else it is a plain `WaystationError`::

    WaystationError                          any status
    ├── NotFoundError                        NOT_FOUND
    │   ├── RunNotFoundError                 RUN_NOT_FOUND
    │   └── WorkflowNotFoundError            WORKFLOW_NOT_FOUND
    ├── AlreadyExistsError                   ALREADY_EXISTS
    │   └── RunAlreadyExistsError            RUN_ALREADY_EXISTS
    ├── FailedPreconditionError              FAILED_PRECONDITION
    │   ├── RunNotSuspendedError             RUN_NOT_SUSPENDED
    │   ├── StepNotSuspendedError            STEP_NOT_SUSPENDED      (+ suspended)
    │   ├── StepAmbiguousError               STEP_AMBIGUOUS          (+ suspended)
    │   ├── LabelNotFoundError               LABEL_NOT_FOUND         (+ suspended)
    │   ├── ForeachIndexNotSuspendedError    FOREACH_INDEX_NOT_SUSPENDED (+ suspended)
    │   ├── RunNotActiveError                RUN_NOT_ACTIVE
    │   ├── RunActiveError                   RUN_ACTIVE
    │   ├── EarlierStepSuspendedError        EARLIER_STEP_SUSPENDED
    │   └── WorkflowChangedError             WORKFLOW_CHANGED
    ├── InvalidArgumentError                 INVALID_ARGUMENT        (+ field_violations)
    │   ├── InvalidResumeDataError           INVALID_RESUME_DATA     (+ field_violations)
    │   └── InvalidInputError                INVALID_INPUT           (+ field_violations)
    ├── AbortedError                         ABORTED
    │   ├── ResumeConflictError              RESUME_CONFLICT
    │   ├── VersionMismatchError             VERSION_MISMATCH
    │   └── RunChangedError                  RUN_CHANGED
    ├── UnavailableError                     UNAVAILABLE
    │   ├── StoreUnavailableError            STORE_UNAVAILABLE
    │   └── ServerDrainingError              SERVER_DRAINING         (+ after_sequence)
    ├── DeadlineExceededError                DEADLINE_EXCEEDED
    ├── CallCancelledError                   CANCELLED
    ├── UnauthenticatedError                 UNAUTHENTICATED
    ├── PermissionDeniedError                PERMISSION_DENIED
    ├── ResourceExhaustedError               RESOURCE_EXHAUSTED
    │   └── ResponseTooLargeError            RESPONSE_TOO_LARGE      (+ size, limit, limit_of)
    ├── UnimplementedError                   UNIMPLEMENTED
    ├── InternalError                        INTERNAL
    └── UnknownError                         UNKNOWN

The TypeScript client's names for three of these classes are aliases here:
`PreconditionError` (FailedPreconditionError), `ConflictError` (AbortedError) and
`InvalidDataError` (InvalidArgumentError, which there names the INVALID_ARGUMENT reason only).

"(+ suspended)": the error lists the run's suspended steps (`suspended`) and its resume labels
(`resume_labels`), from the `SuspendedStepsDetail` the server attaches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from waystation_client._gen.waystation.v1 import errordetails_pb2, message_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
DOMAIN = "waystation.dev"
# How grpc reports an answer over the channel's own receive limit (`max_receive_message_bytes`);
# a request over the server's limit says "SERVER: ..." instead, and did not take effect.
_RECEIVE_LIMIT = re.compile(r"CLIENT: Received message larger than max \((\d+) vs\. (\d+)\)")


class WaystationError(Exception):
    """A failed call: its status code, message and the decoded status details.

    `reason` and `metadata` come from the `google.rpc.ErrorInfo` ("" and {} without one),
    `field_violations` from a `google.rpc.BadRequest` as (field, description) pairs;
    `suspended` (lists of path segments) and `resume_labels` (label -> `ResumeLabel`, the
    step and foreach index it resumes) from a `waystation.v1.SuspendedStepsDetail`.
    `status` is the whole `google.rpc.Status`, when the server sent one.
    """

    CODE: ClassVar[grpc.StatusCode | None] = None
    REASON: ClassVar[str | None] = None

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[tuple[str, str]] = (),
        suspended: Iterable[Sequence[str]] = (),
        status: status_pb2.Status | None = None,
        resume_labels: Mapping[str, message_pb2.ResumeLabel] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations)
        self.suspended = [list(path) for path in suspended]
        self.status = status
        self.resume_labels = dict(resume_labels or {})

    def __str__(self) -> str:
        prefix = f"{self.code.name} {self.reason}" if self.reason else self.code.name
        return f"{prefix}: {self.message}"

    def __repr__(self) -> str:
        name, code = type(self).__name__, self.code.name
        return f"{name}(code={code}, reason={self.reason!r}, message={self.message!r})"

    @property
    def run_id(self) -> str | None:
        """The run concerned (ErrorInfo metadata `run_id`)."""
        return self.metadata.get("run_id")

    @property
    def workflow_id(self) -> str | None:
        """The workflow concerned (ErrorInfo metadata `workflow_id`)."""
        return self.metadata.get("workflow_id")

    @property
    def step_path(self) -> str | None:
        """The step concerned, in text form `outer.inner` (ErrorInfo metadata `step_path`)."""
        return self.metadata.get("step_path")

    @property
    def step(self) -> list[str] | None:
        """The step concerned as path segments, outermost first."""
        return self.step_path.split(".") if self.step_path else None

    @property
    def run_status(self) -> str | None:
        """The run's status when the call failed (ErrorInfo metadata `status`)."""
        return self.metadata.get("status")

    @property
    def label(self) -> str | None:
        """The resume label concerned (ErrorInfo metadata `label`)."""
        return self.metadata.get("label")

    def _int(self, key: str) -> int | None:
        text = self.metadata.get(key)
        return int(text) if text is not None and text.lstrip("-").isdigit() else None


class NotFoundError(WaystationError):
    """Something named by the request does not exist."""

    CODE = grpc.StatusCode.NOT_FOUND


class RunNotFoundError(NotFoundError):
    """No run has this id."""

    REASON = "RUN_NOT_FOUND"


class WorkflowNotFoundError(NotFoundError):
    """No workflow with this id is registered."""

    REASON = "WORKFLOW_NOT_FOUND"


class AlreadyExistsError(WaystationError):
    """The request would create something that exists."""

    CODE = grpc.StatusCode.ALREADY_EXISTS


class RunAlreadyExistsError(AlreadyExistsError):
    """A run with this id exists already (its status is `run_status`)."""

    REASON = "RUN_ALREADY_EXISTS"


class FailedPreconditionError(WaystationError):
    """The run is not in a state where the request makes sense."""

    CODE = grpc.StatusCode.FAILED_PRECONDITION


class RunNotSuspendedError(FailedPreconditionError):
    """Resume of a run that is not suspended."""

    REASON = "RUN_NOT_SUSPENDED"


class StepNotSuspendedError(FailedPreconditionError):
    """The named step is not suspended (or does not exist).

    `suspended` lists the steps that are, `resume_labels` the labels that resume them.
    """

    REASON = "STEP_NOT_SUSPENDED"


class StepAmbiguousError(FailedPreconditionError):
    """Several steps are suspended and none was named.

    `suspended` lists them, `resume_labels` the labels that name each one.
    """

    REASON = "STEP_AMBIGUOUS"


class LabelNotFoundError(FailedPreconditionError):
    """The run has no such resume label; `suspended` and `resume_labels` list what it has."""

    REASON = "LABEL_NOT_FOUND"


class ForeachIndexNotSuspendedError(FailedPreconditionError):
    """The foreach item `foreach_index` of the step is not suspended."""

    REASON = "FOREACH_INDEX_NOT_SUSPENDED"

    @property
    def foreach_index(self) -> int | None:
        """The item that was named (ErrorInfo metadata `foreach_index`)."""
        return self._int("foreach_index")


class RunNotActiveError(FailedPreconditionError):
    """Restart of a run that is not running."""

    REASON = "RUN_NOT_ACTIVE"


class RunActiveError(FailedPreconditionError):
    """Delete or time travel of a run that is still running: cancel it first."""

    REASON = "RUN_ACTIVE"


class EarlierStepSuspendedError(FailedPreconditionError):
    """Time travel to a step after a suspended one (metadata `suspended_step_path`).

    The run would stop at that suspension again: resume it, or time-travel to it.
    """

    REASON = "EARLIER_STEP_SUSPENDED"


class WorkflowChangedError(FailedPreconditionError):
    """A resume of a run that its workflow as deployed now cannot continue (metadata
    `workflow_id`, `step_path`): the step it waits in is gone, steps were added or moved
    before it, or its stored input fails the new schemas. The run is unchanged."""

    REASON = "WORKFLOW_CHANGED"


class InvalidArgumentError(WaystationError):
    """Invalid request data; `field_violations` says where and why."""

    CODE = grpc.StatusCode.INVALID_ARGUMENT
    REASON = "INVALID_ARGUMENT"


class InvalidResumeDataError(InvalidArgumentError):
    """Resume data that the step's resume schema refuses; the run stays suspended."""

    REASON = "INVALID_RESUME_DATA"


class InvalidInputError(InvalidArgumentError):
    """Workflow input or initial state that its schema refuses."""

    REASON = "INVALID_INPUT"


class AbortedError(WaystationError):
    """Another writer changed the run first: re-read it, then retry."""

    CODE = grpc.StatusCode.ABORTED


class ResumeConflictError(AbortedError):
    """Another resume claimed this suspension first."""

    REASON = "RESUME_CONFLICT"


class VersionMismatchError(AbortedError):
    """The run is not at `expected_version` any more (it is at `actual_version`)."""

    REASON = "VERSION_MISMATCH"

    @property
    def expected_version(self) -> int | None:
        """The version the request expected."""
        return self._int("expected_version")

    @property
    def actual_version(self) -> int | None:
        """The run's version when the request arrived."""
        return self._int("actual_version")


class RunChangedError(AbortedError):
    """The store refused a write because the run changed concurrently."""

    REASON = "RUN_CHANGED"


class UnavailableError(WaystationError):
    """The server (or its store) cannot be reached now; retrying later may work."""

    CODE = grpc.StatusCode.UNAVAILABLE


class StoreUnavailableError(UnavailableError):
    """The server's database cannot be reached now."""

    REASON = "STORE_UNAVAILABLE"


class ServerDrainingError(UnavailableError):
    """The server is draining (a rollout) and ended this `watch_run` once it had sent every
    stored event: watch again (another replica answers) with `after_sequence`, and no event
    is missed or repeated."""

    REASON = "SERVER_DRAINING"

    @property
    def after_sequence(self) -> int | None:
        """The sequence to watch again after (ErrorInfo metadata `after_sequence`)."""
        return self._int("after_sequence")


class DeadlineExceededError(WaystationError):
    """The call's deadline expired. A start or resume may still be running on the server."""

    CODE = grpc.StatusCode.DEADLINE_EXCEEDED


class CallCancelledError(WaystationError):
    """The call was cancelled (by the caller or the server)."""

    CODE = grpc.StatusCode.CANCELLED


class UnauthenticatedError(WaystationError):
    """The call carried no valid credentials."""

    CODE = grpc.StatusCode.UNAUTHENTICATED
    REASON = "UNAUTHENTICATED"


class PermissionDeniedError(WaystationError):
    """The caller may not do this."""

    CODE = grpc.StatusCode.PERMISSION_DENIED
    REASON = "PERMISSION_DENIED"


class ResourceExhaustedError(WaystationError):
    """A limit was hit (message size, rate, ...)."""

    CODE = grpc.StatusCode.RESOURCE_EXHAUSTED


class ResponseTooLargeError(ResourceExhaustedError):
    """The answer was larger than a message limit: the server's (`--max-message-bytes`), or
    this client's receive limit (`max_receive_message_bytes`): `limit_of` says which.

    The server made the answer, so a call that changes a run took effect: read the run with
    `get_run` (without `include_state`), or raise the limit. `size` and `limit` are the sizes;
    `run_id` names the run when the server refused (the client cannot read a refused answer).
    """

    REASON = "RESPONSE_TOO_LARGE"

    @property
    def size(self) -> int | None:
        """The answer's size in bytes (ErrorInfo metadata `size`)."""
        return self._int("size")

    @property
    def limit(self) -> int | None:
        """The message limit in bytes that the answer broke (ErrorInfo metadata `limit`)."""
        return self._int("limit")

    @property
    def limit_of(self) -> str:
        """Whose limit the answer broke: "server", or "client" (this client's receive limit)."""
        return self.metadata.get("limit_of", "server")


class UnimplementedError(WaystationError):
    """The server does not implement this call."""

    CODE = grpc.StatusCode.UNIMPLEMENTED


class InternalError(WaystationError):
    """An unexpected server error; the details are in the server's log."""

    CODE = grpc.StatusCode.INTERNAL
    REASON = "INTERNAL"


class UnknownError(WaystationError):
    """A status with code UNKNOWN (or an error that carried no status)."""

    CODE = grpc.StatusCode.UNKNOWN


# The TypeScript client's names for the classes of three codes.
PreconditionError = FailedPreconditionError
ConflictError = AbortedError
InvalidDataError = InvalidArgumentError


def _subclasses(cls: type[WaystationError]) -> list[type[WaystationError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


# A subclass overrides REASON, so `vars` picks the classes that declare their own value.
_BY_REASON = {c.REASON: c for c in _subclasses(WaystationError) if "REASON" in vars(c)}
_BY_CODE = {c.CODE: c for c in _subclasses(WaystationError) if "CODE" in vars(c)}


def error_from_rpc_error(exc: grpc.RpcError) -> WaystationError:
    """The typed error for a failed call (sync `grpc.RpcError` or `grpc.aio.AioRpcError`)."""
    if not isinstance(exc, grpc.Call | grpc.aio.AioRpcError):
        return UnknownError(grpc.StatusCode.UNKNOWN, str(exc))
    # Sync calls give (key, value) namedtuples, aio calls a grpc.aio.Metadata that iterates
    # (key, value) tuples; the stubs describe neither, so say what both really are.
    pairs = cast("Iterable[tuple[str, str | bytes]]", exc.trailing_metadata() or ())
    return error_from_status(exc.code(), exc.details() or "", pairs)


def error_from_status(
    code: grpc.StatusCode,
    message: str,
    trailing_metadata: Iterable[tuple[str, str | bytes]] = (),
) -> WaystationError:
    """The typed error for a status code, message and the call's trailing metadata."""
    status = _rich_status(trailing_metadata)
    if status is None and code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        status = _receive_limit_status(message)
        message = status.message if status else message
    info = error_details_pb2.ErrorInfo()
    bad_request = error_details_pb2.BadRequest()
    steps = errordetails_pb2.SuspendedStepsDetail()
    for detail in status.details if status else ():
        for target in (info, bad_request, steps):
            if detail.Unpack(target):  # fills the target only when the detail has its type
                break
    cls = _BY_REASON.get(info.reason) or _BY_CODE.get(code) or WaystationError
    return cls(
        code,
        message or (status.message if status else ""),
        reason=info.reason,
        metadata=info.metadata,
        field_violations=[(v.field, v.description) for v in bad_request.field_violations],
        suspended=[path.segments for path in steps.suspended],
        status=status,
        resume_labels=steps.resume_labels,
    )


def _rich_status(trailing_metadata: Iterable[tuple[str, str | bytes]]) -> status_pb2.Status | None:
    for key, value in trailing_metadata:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def _receive_limit_status(message: str) -> status_pb2.Status | None:
    """For an answer that this client's receive limit refused, the status the server gives an
    answer over its own limit (RESPONSE_TOO_LARGE), saying that the call took effect; grpc's
    own says neither. None for any other message."""
    found = _RECEIVE_LIMIT.search(message)
    if not found:
        return None
    size, limit = found.groups()
    text = (
        f"the answer is {size} bytes, more than this client's {limit}-byte receive limit"
        " (max_receive_message_bytes); the server made it, so a call that changes a run took"
        " effect: read the run with get_run (without include_state), or raise the limit"
    )
    info = error_details_pb2.ErrorInfo(
        reason=ResponseTooLargeError.REASON,
        domain=DOMAIN,
        metadata={"size": size, "limit": limit, "limit_of": "client"},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    code = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    return status_pb2.Status(code=code, message=text, details=[detail])
