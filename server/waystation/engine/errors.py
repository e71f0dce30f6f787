"""The domain error tree. The transport layer maps it to gRPC in exactly one place.

    WaystationError
    ├── NotFoundError
    │   ├── RunNotFound                 RUN_NOT_FOUND
    │   └── WorkflowNotFound            WORKFLOW_NOT_FOUND
    ├── AlreadyExistsError
    │   └── RunAlreadyExists            RUN_ALREADY_EXISTS
    ├── PreconditionError
    │   ├── RunNotSuspended             RUN_NOT_SUSPENDED
    │   ├── StepNotSuspended            STEP_NOT_SUSPENDED (also a path to no such step)
    │   ├── StepAmbiguous               STEP_AMBIGUOUS
    │   ├── LabelNotFound               LABEL_NOT_FOUND
    │   ├── ForeachIndexNotSuspended    FOREACH_INDEX_NOT_SUSPENDED
    │   ├── RunNotActive                RUN_NOT_ACTIVE
    │   ├── RunActive                   RUN_ACTIVE (delete or time-travel a running run)
    │   └── EarlierStepSuspended        EARLIER_STEP_SUSPENDED (time travel past a suspension)
    ├── InvalidDataError                (carries field violations)
    │   ├── InvalidResumeData           INVALID_RESUME_DATA
    │   ├── InvalidInput                INVALID_INPUT
    │   └── InvalidArgument             INVALID_ARGUMENT
    │       └── RequestReused           INVALID_ARGUMENT (a request id first used for another call)
    ├── ConflictError
    │   ├── ResumeConflict              RESUME_CONFLICT
    │   └── VersionMismatch             VERSION_MISMATCH
    ├── Unauthenticated                 UNAUTHENTICATED
    ├── PermissionDenied                PERMISSION_DENIED
    └── ServerDraining                  SERVER_DRAINING (UNAVAILABLE: ends a watch in a drain)

Constructors take ids and build the message, so every raise site reads the same way and
the metadata a client sees (run_id, step_path, ...) is always present.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from waystation.engine.paths import Path, format_path, item_indices, items_text

if TYPE_CHECKING:
    from waystation.engine.model import LabelTarget

T = TypeVar("T")


@dataclass(frozen=True)
class FieldViolation:
    """One problem with one field of a request (becomes a google.rpc.BadRequest entry)."""

    field: str
    description: str


class WaystationError(Exception):
    """Base of every error the engine raises on purpose."""

    reason = "INTERNAL"

    def __init__(self, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = {k: v for k, v in metadata.items() if v}


class NotFoundError(WaystationError):
    """Something named by the request does not exist."""


class RunNotFound(NotFoundError):
    reason = "RUN_NOT_FOUND"

    def __init__(self, run_id: str, workflow_id: str = "") -> None:
        of = f" of workflow {workflow_id!r}" if workflow_id else ""
        super().__init__(f"run {run_id!r}{of} not found", run_id=run_id, workflow_id=workflow_id)


class WorkflowNotFound(NotFoundError):
    reason = "WORKFLOW_NOT_FOUND"

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {workflow_id!r} is not registered", workflow_id=workflow_id)


class AlreadyExistsError(WaystationError):
    """The request would create something that exists."""


class RunAlreadyExists(AlreadyExistsError):
    reason = "RUN_ALREADY_EXISTS"

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(
            f"run {run_id!r} already exists (status {status})", run_id=run_id, status=status
        )


class PreconditionError(WaystationError):
    """The run is not in a state where the request makes sense."""


class RunNotSuspended(PreconditionError):
    reason = "RUN_NOT_SUSPENDED"

    def __init__(self, run_id: str, status: str, detail: str = "") -> None:
        text = f"run {run_id!r} is not suspended (status {status})"
        super().__init__(f"{text}: {detail}" if detail else text, run_id=run_id, status=status)


class SuspendedListError(PreconditionError):
    """A precondition error that lists the run's suspended steps for the caller, and its
    resume labels (`labels`, attached by the engine, which has the run)."""

    def __init__(self, message: str, run_id: str, suspended: Sequence[Path], **meta: str) -> None:
        listed = ", ".join(f"[{format_path(p)}]" for p in suspended) or "none"
        super().__init__(f"{message}; suspended steps: {listed}", run_id=run_id, **meta)
        self.suspended = list(suspended)
        self.labels: Mapping[str, LabelTarget] = {}


class StepNotSuspended(SuspendedListError):
    reason = "STEP_NOT_SUSPENDED"

    def __init__(self, run_id: str, step: Path, suspended: Sequence[Path]) -> None:
        text = format_path(step)
        super().__init__(
            f"step [{text}] of run {run_id!r} is not suspended",
            run_id,
            suspended,
            step_path=text,
        )


class StepAmbiguous(SuspendedListError):
    reason = "STEP_AMBIGUOUS"

    def __init__(self, run_id: str, suspended: Sequence[Path], under: Path = ()) -> None:
        where = f" under [{format_path(under)}]" if under else ""
        super().__init__(
            f"several steps of run {run_id!r} are suspended{where}; name one in `step`",
            run_id,
            suspended,
            step_path=format_path(under),
        )


class ItemAmbiguous(StepAmbiguous):
    """A foreach index that names an item in several items of an enclosing foreach."""

    def __init__(
        self,
        run_id: str,
        step: Path,
        index: int,
        records: Sequence[Path],
        suspended: Sequence[Path],
    ) -> None:
        text = format_path(step)
        outer = ", ".join(items_text(item_indices(r)[:-1]) for r in records)
        SuspendedListError.__init__(
            self,
            f"item {index} of step [{text}] of run {run_id!r} is suspended in several items of"
            f" the foreach around it ({outer}): resume it by its resume label, or without"
            " foreach_index to resume every one of them",
            run_id,
            suspended,
            step_path=text,
            foreach_index=str(index),
        )


class LabelNotFound(SuspendedListError):
    reason = "LABEL_NOT_FOUND"

    def __init__(self, run_id: str, label: str, suspended: Sequence[Path], known: Iterable[str]):
        names = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"resume label {label!r} not found in run {run_id!r} (labels: {names})",
            run_id,
            suspended,
            label=label,
        )


class ForeachIndexNotSuspended(SuspendedListError):
    reason = "FOREACH_INDEX_NOT_SUSPENDED"

    def __init__(
        self,
        run_id: str,
        step: Path,
        index: int,
        suspended: Sequence[Path],
        itemless: bool = False,
    ) -> None:
        """`itemless`: no suspended step there runs in a foreach (it has no items at all)."""
        text = format_path(step)
        what = (
            f"step [{text}] of run {run_id!r} is not in a foreach: it has no item {index}"
            if itemless
            else f"item {index} of step [{text}] of run {run_id!r} is not suspended"
        )
        super().__init__(
            what,
            run_id,
            suspended,
            step_path=text,
            foreach_index=str(index),
        )


class RunNotActive(PreconditionError):
    reason = "RUN_NOT_ACTIVE"

    def __init__(self, run_id: str, status: str, why: str = "", **more: str) -> None:
        """`status`: the run's; `why` it cannot be restarted though it runs, if it does."""
        text = f"run {run_id!r} is not active (status {status})"
        super().__init__(f"{text}: {why}" if why else text, run_id=run_id, status=status, **more)


class RunActive(PreconditionError):
    reason = "RUN_ACTIVE"

    def __init__(self, run_id: str, status: str, action: str) -> None:
        super().__init__(
            f"cannot {action} run {run_id!r} while it is {status}; cancel it first",
            run_id=run_id,
            status=status,
        )


class EarlierStepSuspended(PreconditionError):
    reason = "EARLIER_STEP_SUSPENDED"

    def __init__(self, run_id: str, target: Path, suspended: Path) -> None:
        super().__init__(
            f"cannot time-travel run {run_id!r} to step [{format_path(target)}]: step "
            f"[{format_path(suspended)}] before it is suspended; resume it, or time-travel "
            "to it",
            run_id=run_id,
            step_path=format_path(target),
            suspended_step_path=format_path(suspended),
        )


class WorkflowChanged(PreconditionError):
    """The run's records no longer fit its workflow as deployed now (engine/drift.py)."""

    reason = "WORKFLOW_CHANGED"

    def __init__(self, run_id: str, workflow_id: str, what: str, step: Path) -> None:
        super().__init__(
            f"run {run_id!r} cannot go on under workflow {workflow_id!r} as deployed now: "
            f"{what}. Deploy the workflow as it was when the run reached this point to go "
            "on, or time-travel the run (TimeTravelRun) to a step, or cancel it",
            run_id=run_id,
            workflow_id=workflow_id,
            step_path=format_path(step),
        )


class InvalidDataError(WaystationError):
    """Data in the request is invalid; `violations` says where and why."""

    def __init__(self, message: str, violations: Sequence[FieldViolation], **meta: str) -> None:
        super().__init__(message, **meta)
        self.violations = list(violations)


class InvalidResumeData(InvalidDataError):
    reason = "INVALID_RESUME_DATA"

    def __init__(self, run_id: str, step: Path, violations: Sequence[FieldViolation]) -> None:
        text = format_path(step)
        super().__init__(
            f"invalid resume data for step [{text}] of run {run_id!r}: "
            + "; ".join(f"{v.field}: {v.description}" for v in violations),
            violations,
            run_id=run_id,
            step_path=text,
        )


class InvalidInput(InvalidDataError):
    reason = "INVALID_INPUT"

    def __init__(
        self, workflow_id: str, violations: Sequence[FieldViolation], step: Path = ()
    ) -> None:
        """`step`: the step whose input it is (a time travel's target), if not the run's."""
        of = f"step [{format_path(step)}] of " if step else ""
        super().__init__(
            f"invalid input for {of}workflow {workflow_id!r}: "
            + "; ".join(f"{v.field}: {v.description}" for v in violations),
            violations,
            workflow_id=workflow_id,
            step_path=format_path(step),
        )


class InvalidArgument(InvalidDataError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str, *more: FieldViolation) -> None:
        violations = [FieldViolation(field, description), *more]
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations), violations)


class RequestReused(InvalidArgument):
    """A request id sent again with other arguments: it names a call, and a retry repeats
    the call as it was (the idempotency-key rule of Stripe's API and of the IETF draft)."""

    CALLS = {
        "create": "CreateRun",
        "start": "StartRun",
        "resume": "ResumeRun",
        "restart": "RestartRun",
        "travel": "TimeTravelRun",
    }

    def __init__(self, request_id: str, scope: str) -> None:
        call = self.CALLS.get(scope.split(":", 1)[0], "call")
        super().__init__(
            "request_id",
            f"request id {request_id!r} was first used for a {call} with other arguments; a"
            " retry must repeat its call as it was, and a new call needs a new request id",
        )


USER_FAILURES = (Exception, SystemExit, KeyboardInterrupt)
"""What a user's code (a step, a condition) may raise as its own failure. SystemExit (a
step's sys.exit(), argparse on bad arguments) and KeyboardInterrupt are among them: let
through, they stop the server's event loop, and again at every recovery of the run."""


def exception_text(exc: BaseException) -> str:
    """What a user's exception says: its str, or its type's name when it says nothing or
    when its own __str__ raises."""
    try:
        return str(exc) or type(exc).__name__
    except Exception:
        return type(exc).__name__


class Violations:
    """The problems of a request's fields, all of them: each check runs even when an earlier
    one failed, and `raise_any` refuses the request with one violation per problem (as
    DESIGN.md §5 asks), not only the first one found."""

    def __init__(self) -> None:
        self.found: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.found.append(FieldViolation(field, description))

    def check(self, check: Callable[..., T], *args: Any, default: T) -> T:
        """`check(*args)`, or `default` once its InvalidArgument is noted."""
        try:
            return check(*args)
        except InvalidArgument as exc:
            self.found += exc.violations
            return default

    def raise_any(self) -> None:
        if self.found:
            first, *more = self.found
            raise InvalidArgument(first.field, first.description, *more)


NO_DATA: Any = object()
"""No data to read a location against."""


class ConflictError(WaystationError):
    """Another writer changed the run first; re-read it and retry."""


class ResumeConflict(ConflictError):
    reason = "RESUME_CONFLICT"

    def __init__(
        self,
        run_id: str,
        status: str,
        seen: Any = None,
        continuing: bool = False,
    ) -> None:
        super().__init__(
            f"run {run_id!r} was resumed by another caller (status now {status}); "
            "only one resume continues a suspension, re-read the run before resuming again",
            run_id=run_id,
            status=status,
        )
        self.seen = seen
        """The run as the losing resume read it (a RunSnapshot), or None."""
        self.continuing = continuing
        """Whether `seen` is the run while the winner's continuation was going on."""


class VersionMismatch(ConflictError):
    reason = "VERSION_MISMATCH"

    def __init__(self, run_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"run {run_id!r} is at version {actual}, not the expected {expected}",
            run_id=run_id,
            expected_version=str(expected),
            actual_version=str(actual),
        )


class Unauthenticated(WaystationError):
    reason = "UNAUTHENTICATED"

    def __init__(self, why: str) -> None:
        super().__init__(f"not authenticated: {why}")


class PermissionDenied(WaystationError):
    reason = "PERMISSION_DENIED"

    def __init__(self, principal: str, action: str, what: str = "") -> None:
        target = f" on {what}" if what else ""
        super().__init__(
            f"{principal!r} may not {action}{target}", principal=principal, action=action
        )


def violations_from(
    error: ValidationError, prefix: str, data: Any = NO_DATA
) -> list[FieldViolation]:
    """One FieldViolation per pydantic error, the field written as `prefix.loc.loc` (see
    `field_path`; `data` is what was validated)."""
    out = []
    for item in error.errors(include_url=False):
        loc = field_path(item["loc"], data, missing=item["type"] == "missing")
        field = ".".join(part for part in (prefix, loc) if part)
        out.append(FieldViolation(field, item["msg"]))
    return out


def field_path(loc: Sequence[str | int], data: Any = NO_DATA, missing: bool = False) -> str:
    """A pydantic error location as the client's data names it, dotted (`items.1.sku`).
    pydantic puts the member of a union it tried in the location (`pet.dog.barks`,
    `either.int`): read against the validated `data`, a part the data does not have there
    is such a tag and is left out, except the last part of a `missing` field's location."""
    parts = []
    for number, part in enumerate(loc, 1):
        if data is NO_DATA or (missing and number == len(loc)):
            parts.append(str(part))
        elif _has(data, part):
            parts.append(str(part))
            data = data[part]
    return ".".join(parts)


def _has(data: Any, part: str | int) -> bool:
    if isinstance(data, dict):
        return part in data
    return isinstance(data, list) and isinstance(part, int) and -len(data) <= part < len(data)


class ServerDraining(WaystationError):
    """The server is draining (a rollout): a WatchRun, which would wait for days, ends now,
    naming the sequence to watch again after, on another replica."""

    reason = "SERVER_DRAINING"

    def __init__(self, run_id: str, after: int) -> None:
        super().__init__(
            f"this server is draining: watch run {run_id!r} again through another replica,"
            f" with after_sequence {after}",
            run_id=run_id,
            after_sequence=str(after),
        )
