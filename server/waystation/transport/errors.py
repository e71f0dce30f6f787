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
from collections.abc import Awaitable, Callable, Iterable, Mapping
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


MESSAGE_BYTES = 1000
"""The status message's longest form on the wire (percent-encoded: a character outside
printable ASCII takes three bytes for each of its UTF-8 bytes)."""
DETAILS_BYTES = 4000
"""The details' budget, serialized. gRPC clients drop trailers over 8 KiB at random, and
over 16 KiB always, as RESOURCE_EXHAUSTED "Stream removed" with no code or reason of the
error: the details travel base64-encoded, and carry the message a second time. What does
not fit is left out, and ErrorInfo's metadata says how many (`omitted`)."""


def to_status(exc: BaseException, code: grpc.StatusCode) -> status_pb2.Status:
    """The rich status for a mapped error, within the budgets above."""
    reason = getattr(exc, "reason", None) or "INTERNAL"
    metadata = {k: _cut(v, 200) for k, v in getattr(exc, "metadata", {}).items()}
    status = status_pb2.Status(
        code=getattr(code_pb2, code.name),
        message=_cut_message(getattr(exc, "message", None) or str(exc), MESSAGE_BYTES),
    )
    room = Room(DETAILS_BYTES - status.ByteSize() - _size(metadata) - 400)
    details: list[Any] = []
    violations = getattr(exc, "violations", None)
    if violations:
        fitted = room.take(
            (
                error_details_pb2.BadRequest.FieldViolation(
                    field=_cut(v.field, 200), description=_cut(v.description, 300)
                )
                for v in violations[:20]
            ),
            _byte_size,
        )
        details.append(error_details_pb2.BadRequest(field_violations=fitted))
        room.omitted += max(0, len(violations) - 20)
    suspended = getattr(exc, "suspended", None)
    if suspended is not None:
        details.append(_suspended_detail(suspended, getattr(exc, "labels", {}), room))
    if room.omitted:
        metadata["omitted"] = f"{room.omitted} more entries than the error's details can carry"
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)
    status.details.extend(_pack(detail) for detail in [info, *details])
    return status


Entry = TypeVar("Entry")


class Room:
    """What is left of the details' budget; `take` keeps the entries that fit, in order,
    and counts the rest as omitted."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.omitted = 0

    def take(self, entries: Iterable[Entry], size: Callable[[Entry], int]) -> list[Entry]:
        kept = []
        for entry in entries:
            needed = size(entry) + 8  # its tag and length, and a map entry's
            if needed <= self.left:
                self.left -= needed
                kept.append(entry)
            else:
                self.omitted += 1
        return kept


def _suspended_detail(
    suspended: list[Path], labels: Mapping[str, LabelTarget], room: Room
) -> errordetails_pb2.SuspendedStepsDetail:
    paths = room.take((message_pb2.StepPath(segments=p) for p in suspended), _byte_size)
    detail = errordetails_pb2.SuspendedStepsDetail(suspended=paths)
    for label, target in room.take(labels.items(), _label_size):
        label_to_proto(target, detail.resume_labels[label])
    return detail


def _byte_size(message: Any) -> int:
    return int(message.ByteSize())


def _label_size(entry: tuple[str, LabelTarget]) -> int:
    label, target = entry
    path = sum(_utf8_len(segment) + 2 for segment in target.path)
    return _utf8_len(label) + path + 12


def _size(metadata: Mapping[str, str]) -> int:
    return sum(_utf8_len(k) + _utf8_len(v) + 8 for k, v in metadata.items())


def _cut(text: str, limit: int) -> str:
    """`text` in at most `limit` UTF-8 bytes, marked with "…" where it was cut."""
    if _utf8_len(text) <= limit:
        return text
    return text.encode("utf-8", "surrogatepass")[: limit - 3].decode("utf-8", "ignore") + "…"


def _cut_message(text: str, limit: int) -> str:
    """`text` in at most `limit` bytes once percent-encoded as grpc-message is: a character
    outside printable ASCII, or "%", takes three bytes for each of its UTF-8 bytes."""
    size = fits = 0
    for i, char in enumerate(text):
        size += 1 if " " <= char <= "~" and char != "%" else 3 * _utf8_len(char)
        if size <= limit - 9:  # room for "…", 9 bytes encoded
            fits = i + 1
        elif size > limit:
            return text[:fits] + "…"
    return text


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


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
