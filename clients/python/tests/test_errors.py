"""Typed errors from status details, decoded without a server (the e2e tests use a real one)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from waystation_client import (
    AbortedError,
    ConflictError,
    DeadlineExceededError,
    EarlierStepSuspendedError,
    FailedPreconditionError,
    ForeachIndexNotSuspendedError,
    InvalidArgumentError,
    InvalidDataError,
    InvalidResumeDataError,
    PreconditionError,
    ResourceExhaustedError,
    ResponseTooLargeError,
    ResumeLabel,
    RunNotSuspendedError,
    ServerDrainingError,
    StepAmbiguousError,
    StepPath,
    StoreUnavailableError,
    SuspendedStepsDetail,
    UnavailableError,
    VersionMismatchError,
    WaystationError,
)
from waystation_client._errors import STATUS_DETAILS_KEY, error_from_status

Code = grpc.StatusCode

# Every reason the server sends (docs/api.md) with its status code.
SERVER_REASONS = {
    "RUN_NOT_FOUND": Code.NOT_FOUND,
    "WORKFLOW_NOT_FOUND": Code.NOT_FOUND,
    "RUN_ALREADY_EXISTS": Code.ALREADY_EXISTS,
    "RUN_NOT_SUSPENDED": Code.FAILED_PRECONDITION,
    "STEP_NOT_SUSPENDED": Code.FAILED_PRECONDITION,
    "STEP_AMBIGUOUS": Code.FAILED_PRECONDITION,
    "LABEL_NOT_FOUND": Code.FAILED_PRECONDITION,
    "FOREACH_INDEX_NOT_SUSPENDED": Code.FAILED_PRECONDITION,
    "RUN_NOT_ACTIVE": Code.FAILED_PRECONDITION,
    "RUN_ACTIVE": Code.FAILED_PRECONDITION,
    "EARLIER_STEP_SUSPENDED": Code.FAILED_PRECONDITION,
    "WORKFLOW_CHANGED": Code.FAILED_PRECONDITION,
    "INVALID_RESUME_DATA": Code.INVALID_ARGUMENT,
    "INVALID_INPUT": Code.INVALID_ARGUMENT,
    "INVALID_ARGUMENT": Code.INVALID_ARGUMENT,
    "RESUME_CONFLICT": Code.ABORTED,
    "VERSION_MISMATCH": Code.ABORTED,
    "RUN_CHANGED": Code.ABORTED,
    "RESPONSE_TOO_LARGE": Code.RESOURCE_EXHAUSTED,
    "STORE_UNAVAILABLE": Code.UNAVAILABLE,
    "SERVER_DRAINING": Code.UNAVAILABLE,
    "UNAUTHENTICATED": Code.UNAUTHENTICATED,
    "PERMISSION_DENIED": Code.PERMISSION_DENIED,
    "INTERNAL": Code.INTERNAL,
}


def trailers(code: Code, *details: Message) -> list[tuple[str, str | bytes]]:
    """Trailing metadata as a server sends it with a rich status."""
    status = status_pb2.Status(code=code.value[0], message="from status")
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return [("other", "x"), (STATUS_DETAILS_KEY, status.SerializeToString())]


def info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain="waystation.dev", metadata=metadata)


def test_the_reason_picks_the_class_and_metadata_becomes_attributes() -> None:
    meta = trailers(Code.FAILED_PRECONDITION, info("RUN_NOT_SUSPENDED", run_id="r", status="X"))
    error = error_from_status(Code.FAILED_PRECONDITION, "not suspended", meta)
    assert type(error) is RunNotSuspendedError
    assert isinstance(error, FailedPreconditionError)
    assert (error.run_id, error.run_status, error.reason) == ("r", "X", "RUN_NOT_SUSPENDED")
    assert str(error) == "FAILED_PRECONDITION RUN_NOT_SUSPENDED: not suspended"


def test_bad_request_violations_become_field_description_pairs() -> None:
    violations = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="resume_data.a", description="no")
        ]
    )
    meta = trailers(Code.INVALID_ARGUMENT, info("INVALID_RESUME_DATA", step_path="a.b"), violations)
    error = error_from_status(Code.INVALID_ARGUMENT, "bad", meta)
    assert type(error) is InvalidResumeDataError
    assert isinstance(error, InvalidArgumentError)
    assert error.field_violations == [("resume_data.a", "no")]
    assert error.step == ["a", "b"]


def test_suspended_steps_detail_lists_the_paths_and_the_resume_labels() -> None:
    detail = SuspendedStepsDetail(
        suspended=[StepPath(segments=["a", "b"]), StepPath(segments=["c"])],
        resume_labels={
            "ask-b": ResumeLabel(step=StepPath(segments=["a", "b"])),
            "ask-c": ResumeLabel(step=StepPath(segments=["c"]), foreach_index=0),
        },
    )
    meta = trailers(Code.FAILED_PRECONDITION, info("STEP_AMBIGUOUS"), detail)
    error = error_from_status(Code.FAILED_PRECONDITION, "", meta)
    assert type(error) is StepAmbiguousError
    assert error.suspended == [["a", "b"], ["c"]]
    assert sorted(error.resume_labels) == ["ask-b", "ask-c"]
    assert list(error.resume_labels["ask-b"].step.segments) == ["a", "b"]
    assert not error.resume_labels["ask-b"].HasField("foreach_index")
    assert error.resume_labels["ask-c"].foreach_index == 0
    assert error.message == "from status"


def test_numeric_metadata_is_read_as_int() -> None:
    meta = trailers(
        Code.ABORTED, info("VERSION_MISMATCH", expected_version="3", actual_version="4")
    )
    error = error_from_status(Code.ABORTED, "", meta)
    assert isinstance(error, VersionMismatchError)
    assert (error.expected_version, error.actual_version) == (3, 4)
    index = error_from_status(
        Code.FAILED_PRECONDITION,
        "",
        trailers(Code.FAILED_PRECONDITION, info("FOREACH_INDEX_NOT_SUSPENDED", foreach_index="0")),
    )
    assert isinstance(index, ForeachIndexNotSuspendedError) and index.foreach_index == 0


@pytest.mark.parametrize(("reason", "code"), SERVER_REASONS.items())
def test_every_server_reason_has_its_own_class_under_its_codes_class(
    reason: str, code: Code
) -> None:
    error = error_from_status(code, "m", trailers(code, info(reason)))
    assert reason == type(error).REASON
    assert isinstance(error, type(error_from_status(code, "m")))


def test_earlier_step_suspended_names_the_target_and_the_suspended_step() -> None:
    meta = trailers(
        Code.FAILED_PRECONDITION,
        info("EARLIER_STEP_SUSPENDED", run_id="r", step_path="c", suspended_step_path="a.b"),
    )
    error = error_from_status(Code.FAILED_PRECONDITION, "resume it", meta)
    assert type(error) is EarlierStepSuspendedError
    assert isinstance(error, FailedPreconditionError)
    assert (error.run_id, error.step, error.metadata["suspended_step_path"]) == ("r", ["c"], "a.b")
    assert str(error) == "FAILED_PRECONDITION EARLIER_STEP_SUSPENDED: resume it"


def test_server_draining_names_the_sequence_to_watch_again_after() -> None:
    meta = trailers(Code.UNAVAILABLE, info("SERVER_DRAINING", run_id="r", after_sequence="7"))
    error = error_from_status(Code.UNAVAILABLE, "draining", meta)
    assert type(error) is ServerDrainingError
    assert isinstance(error, UnavailableError)
    assert (error.run_id, error.after_sequence) == ("r", 7)
    assert str(error) == "UNAVAILABLE SERVER_DRAINING: draining"
    meta = trailers(Code.UNAVAILABLE, info("SERVER_DRAINING"))
    bare = error_from_status(Code.UNAVAILABLE, "", meta)
    assert isinstance(bare, ServerDrainingError) and bare.after_sequence is None


def test_response_too_large_names_the_run_and_the_sizes() -> None:
    meta = trailers(
        Code.RESOURCE_EXHAUSTED,
        info("RESPONSE_TOO_LARGE", run_id="r", size="70000", limit="65536"),
    )
    error = error_from_status(Code.RESOURCE_EXHAUSTED, "too large", meta)
    assert type(error) is ResponseTooLargeError
    assert isinstance(error, ResourceExhaustedError)
    assert (error.run_id, error.size, error.limit) == ("r", 70000, 65536)
    assert error.limit_of == "server"
    assert str(error) == "RESOURCE_EXHAUSTED RESPONSE_TOO_LARGE: too large"


def test_an_answer_over_the_clients_receive_limit_is_response_too_large_of_the_client() -> None:
    grpc_says = "Stream removed (CLIENT: Received message larger than max (10000262 vs. 4194304))"
    error = error_from_status(Code.RESOURCE_EXHAUSTED, grpc_says)
    assert type(error) is ResponseTooLargeError
    assert (error.reason, error.size, error.limit) == ("RESPONSE_TOO_LARGE", 10000262, 4194304)
    assert (error.limit_of, error.run_id) == ("client", None)
    assert "4194304-byte receive limit (max_receive_message_bytes)" in error.message
    assert "took effect" in error.message and "raise the limit" in error.message


def test_a_request_over_the_servers_limit_stays_resource_exhausted() -> None:
    # It did not take effect: the server refused it before any handler ran.
    grpc_says = "SERVER: Received message larger than max (5000059 vs. 4194304)"
    error = error_from_status(Code.RESOURCE_EXHAUSTED, grpc_says)
    assert type(error) is ResourceExhaustedError
    assert (error.reason, error.message) == ("", grpc_says)


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (Code.DEADLINE_EXCEEDED, "", DeadlineExceededError),
        (Code.UNAVAILABLE, "", UnavailableError),
        (Code.UNAVAILABLE, "STORE_UNAVAILABLE", StoreUnavailableError),
        (Code.UNAVAILABLE, "SERVER_DRAINING", ServerDrainingError),
        (Code.UNAVAILABLE, "SOME_NEW_REASON", UnavailableError),
        (Code.DATA_LOSS, "", WaystationError),
    ],
)
def test_without_a_known_reason_the_code_picks_the_class(
    code: Code, reason: str, expected: type[WaystationError]
) -> None:
    meta = trailers(code, info(reason)) if reason else []
    error = error_from_status(code, "m", meta)
    assert type(error) is expected
    assert error.code is code
    assert error.run_id is None and error.field_violations == [] and error.suspended == []
    assert error.resume_labels == {}


def test_the_typescript_names_of_the_code_classes_are_aliases() -> None:
    assert PreconditionError is FailedPreconditionError
    assert ConflictError is AbortedError
    assert InvalidDataError is InvalidArgumentError
    refused = error_from_status(Code.ABORTED, "m", trailers(Code.ABORTED, info("RUN_CHANGED")))
    assert isinstance(refused, ConflictError)
