"""The one place where errors become gRPC statuses.

`ERROR_TABLE` maps an error class to a status code; a raised error is looked up along its
MRO, so a new subclass of a mapped class needs no new row. `handle_errors` wraps every
servicer method and turns a mapped error into a `google.rpc.Status` with an `ErrorInfo`
(stable reason, domain "waystation.dev", ids in metadata) and, for invalid data, a
`BadRequest` with one field violation per problem. Anything unmapped is INTERNAL with a
generic message; its details go to the log only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from waystation.api.v1 import errordetails_pb2, message_pb2
from waystation.engine import errors
from waystation.engine.ids import MAX_ID
from waystation.engine.model import LabelTarget
from waystation.engine.paths import Path
from waystation.storage import StoreConflict, StoreUnavailable
from waystation.transport.convert import label_to_proto
from waystation.transport.registration import Undecodable

log = logging.getLogger(__name__)

DOMAIN = "waystation.dev"


class ResponseTooLarge(Exception):
    """An answer larger than the server may send: refused with this, rather than failed by
    grpc after the handler (no details, a traceback in the log). A call that changes a run
    took effect all the same."""

    reason = "RESPONSE_TOO_LARGE"

    def __init__(self, size: int, limit: int, advice: str, **ids: str) -> None:
        self.message = (
            f"the answer is {size} bytes, more than the server's {limit}-byte message limit"
            f" (--max-message-bytes); {advice}, or raise the limit"
        )
        super().__init__(self.message)
        self.metadata = {"size": str(size), "limit": str(limit), **ids}


CHANGES_A_RUN = frozenset(
    {"CreateRun", "StartRun", "ResumeRun", "CancelRun", "RestartRun", "TimeTravelRun"}
)


def check_fits(message: Any, limit: int, method: str = "") -> Any:
    """`message`, the answer of `method`, or ResponseTooLarge if it is larger than `limit`
    bytes (0: no limit), with the advice that suits the call."""
    if not limit or (size := message.ByteSize()) <= limit:
        return message
    fields = message.DESCRIPTOR.fields_by_name
    ids = {"run_id": _run_id_of(message)}
    if "next_page_token" in fields:
        advice = "ask for a smaller page_size"
    elif method == "WatchRun":  # the stream stops here: say how to go on past the event
        ids["sequence"] = str(message.sequence)
        advice = f"this event cannot be sent: watch again with after_sequence {message.sequence}"
    elif method in CHANGES_A_RUN:
        advice = (
            "a call that changes a run took effect: read the run with GetRun (without"
            " include_state if that was asked for)"
        )
    else:
        advice = f"{method or 'the call'} changes nothing: ask without include_state if you did"
    raise ResponseTooLarge(size, limit, advice, **ids)


def _run_id_of(message: Any) -> str:
    """The run a WorkflowResult, Run or RunEvent is about; "" for other answers."""
    fields = message.DESCRIPTOR.fields_by_name
    return message.run_id if "run_id" in fields else ""


ERROR_TABLE: dict[type[BaseException], grpc.StatusCode] = {
    errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    errors.PreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.InvalidDataError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ConflictError: grpc.StatusCode.ABORTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ServerDraining: grpc.StatusCode.UNAVAILABLE,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    StoreConflict: grpc.StatusCode.ABORTED,
    ResponseTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def lookup(exc: BaseException) -> grpc.StatusCode | None:
    """The status code for `exc`, found along its class's MRO."""
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return None


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(exc: BaseException, code: grpc.StatusCode) -> status_pb2.Status:
    """The rich status for a mapped error."""
    reason = getattr(exc, "reason", None) or "INTERNAL"
    # Trailers are limited (8 KiB by default): echoed values are cut short.
    metadata = {k: _cut(v, 200) for k, v in getattr(exc, "metadata", {}).items()}
    status = status_pb2.Status(
        code=getattr(code_pb2, code.name),
        message=_cut(getattr(exc, "message", None) or str(exc), 1000),
    )
    status.details.append(
        _pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))
    )
    violations = getattr(exc, "violations", None)
    if violations:
        status.details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=_cut(v.field, 200), description=_cut(v.description, 300)
                        )
                        for v in violations[:20]
                    ]
                )
            )
        )
    suspended = getattr(exc, "suspended", None)
    if suspended is not None:
        status.details.append(_pack(_suspended_detail(suspended, getattr(exc, "labels", {}))))
    return status


def _suspended_detail(
    suspended: list[Path], labels: Mapping[str, LabelTarget]
) -> errordetails_pb2.SuspendedStepsDetail:
    detail = errordetails_pb2.SuspendedStepsDetail(
        suspended=[message_pb2.StepPath(segments=p) for p in suspended]
    )
    for label, target in labels.items():
        label_to_proto(target, detail.resume_labels[label])
    return detail


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


Method = TypeVar("Method", bound=Callable[..., Awaitable[Any]])


def handle_errors(method: Method) -> Method:
    """Wrap a unary servicer method: mapped errors abort with their rich status, and so
    does an answer larger than the servicer's `max_message_bytes`."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            reject_malformed(request)
            answer = await method(self, request, context)
            return check_fits(answer, self.max_message_bytes, method.__name__)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_for(exc, context, method.__name__)

    return wrapper  # type: ignore[return-value]


def reject_malformed(request: Any) -> None:
    """INVALID_ARGUMENT for a request whose bytes did not decode (see registration.py), or
    that names something longer than the server keeps (`TEXT_LIMITS`, a step path)."""
    if isinstance(request, Undecodable):
        raise errors.InvalidArgument("request", request.reason)
    fields = request.DESCRIPTOR.fields_by_name
    problems = errors.Violations()
    for name, limit in TEXT_LIMITS.items():
        if name in fields and len(getattr(request, name)) > limit:
            problems.add(name, f"longer than {limit} characters")
    if "step" in fields:
        segments = request.step.segments
        if len(segments) > MAX_PATH:
            problems.add("step", f"more than {MAX_PATH} segments")
        elif any(len(segment) > MAX_ID for segment in segments):
            problems.add("step", f"a segment longer than {MAX_ID} characters")
    problems.raise_any()


TEXT_LIMITS = {
    "resource_id": MAX_ID,
    "request_id": MAX_ID,
    "label": MAX_ID,
    "reason": 1000,
    "workflow_id": MAX_ID,
}
"""Request fields the server stores or looks up, and their longest accepted length (run ids
are checked with their other rules; a workflow id also where it is only a filter). A 3 MB
resource id was stored, and made every ListRuns page that held it too large to answer."""
MAX_PATH = 32
"""Segments of a step path: deeper than any workflow nests."""


async def abort_for(exc: Exception, context: grpc.aio.ServicerContext[Any, Any], rpc: str) -> None:
    code = lookup(exc)
    if code is None:
        log.exception("unexpected error in %s", rpc)
        code, exc = grpc.StatusCode.INTERNAL, _Internal()
    status = rpc_status.to_status(to_status(exc, code))
    await context.abort_with_status(status)  # type: ignore[attr-defined]


class _Internal(Exception):
    reason = "INTERNAL"
    message = "internal error; the server log has the details"
