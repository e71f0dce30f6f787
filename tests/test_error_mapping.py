"""The error table both ways (STYLE.md rule 12): every domain error maps to the code and
reason of DESIGN.md §5, and one test per status code goes through a real server and checks
the code and the unpacked google.rpc details; the server keeps serving after each error.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import code_pb2, error_details_pb2

from tests.support.api import assert_eventually, call_error, path, value
from waystation.api.v1 import enums_pb2, errordetails_pb2, message_pb2
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub
from waystation.engine import Engine, errors
from waystation.engine.ids import MAX_ID
from waystation.storage import SqliteStore
from waystation.transport.errors import (
    DETAILS_BYTES,
    DOMAIN,
    MESSAGE_BYTES,
    ResponseTooLarge,
    check_fits,
    lookup,
    to_status,
)

# DESIGN.md §5, reason -> code. UNAUTHENTICATED and PERMISSION_DENIED belong to the auth
# interceptor, not to the engine's tree.
DESIGN_TABLE = {
    "RUN_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "WORKFLOW_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "RUN_ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "RUN_NOT_SUSPENDED": grpc.StatusCode.FAILED_PRECONDITION,
    "STEP_NOT_SUSPENDED": grpc.StatusCode.FAILED_PRECONDITION,
    "STEP_AMBIGUOUS": grpc.StatusCode.FAILED_PRECONDITION,
    "LABEL_NOT_FOUND": grpc.StatusCode.FAILED_PRECONDITION,
    "FOREACH_INDEX_NOT_SUSPENDED": grpc.StatusCode.FAILED_PRECONDITION,
    "RUN_NOT_ACTIVE": grpc.StatusCode.FAILED_PRECONDITION,
    "INVALID_RESUME_DATA": grpc.StatusCode.INVALID_ARGUMENT,
    "INVALID_INPUT": grpc.StatusCode.INVALID_ARGUMENT,
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "RESUME_CONFLICT": grpc.StatusCode.ABORTED,
    "VERSION_MISMATCH": grpc.StatusCode.ABORTED,
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    # Not in DESIGN.md §5 yet: DeleteRun / TimeTravelRun of a run that is still running.
    "RUN_ACTIVE": grpc.StatusCode.FAILED_PRECONDITION,
    "EARLIER_STEP_SUSPENDED": grpc.StatusCode.FAILED_PRECONDITION,
    # Not in DESIGN.md §5: a resume that a deploy since made impossible (docs/workflows.md).
    "WORKFLOW_CHANGED": grpc.StatusCode.FAILED_PRECONDITION,
    # Not in DESIGN.md §5: a WatchRun that a drain ends, to be watched again elsewhere.
    "SERVER_DRAINING": grpc.StatusCode.UNAVAILABLE,
}
ORDER = {"order_id": "o-1", "amount": 250.0}


# -- unit level: the table ----------------------------------------------------------------


def subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)


ALL_ERRORS = sorted(
    {cls for cls in subclasses(errors.WaystationError) if cls.__module__ == errors.__name__},
    key=lambda c: c.__name__,
)
CONCRETE = [cls for cls in ALL_ERRORS if "reason" in vars(cls)]


def bare(cls: type[BaseException]) -> BaseException:
    """An instance for the table, without the ids its constructor wants."""
    return cls.__new__(cls)


def test_the_error_tree_has_one_concrete_class_per_reason_of_the_design_table() -> None:
    """Every reason of DESIGN.md §5 is raised by exactly one class, and no class invents a
    reason the table does not have."""
    reasons = [cls.reason for cls in CONCRETE]
    assert sorted(reasons) == sorted(DESIGN_TABLE)


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_domain_error_maps_to_a_code_that_is_not_internal(cls: type) -> None:
    """Every class of the tree, abstract or not, is found in the table along its MRO."""
    code = lookup(bare(cls))
    assert code is not None
    assert code != grpc.StatusCode.INTERNAL


@pytest.mark.parametrize("cls", CONCRETE, ids=lambda c: c.__name__)
def test_every_concrete_error_maps_to_the_code_and_reason_of_the_design_table(
    cls: type,
) -> None:
    """A concrete error's code is the one DESIGN.md §5 gives its reason, and the rich status
    carries that reason in an ErrorInfo of domain waystation.dev."""
    error = bare(cls)
    code = lookup(error)
    assert code == DESIGN_TABLE[cls.reason]
    status = to_status(error, code)
    assert status.code == getattr(code_pb2, code.name)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == (cls.reason, "waystation.dev")


def test_an_unexpected_error_is_not_in_the_table() -> None:
    """Anything outside the tree has no row: the decorator turns it into INTERNAL."""
    assert lookup(ValueError("boom")) is None
    assert lookup(KeyError("x")) is None


def test_error_details_carry_ids_violations_and_suspended_steps() -> None:
    """Constructors take ids; the status carries them in ErrorInfo metadata, one BadRequest
    violation per problem, and the suspended steps of a refused resume."""
    error = errors.InvalidResumeData(
        "r-1",
        ("inner", "b"),
        [errors.FieldViolation("resume_data.n", "too small")],
    )
    status = to_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad)
    assert dict(info.metadata) == {"run_id": "r-1", "step_path": "inner.b"}
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("resume_data.n", "too small")
    ]

    listed = to_status(
        errors.StepNotSuspended("r-1", ("a",), [("inner", "a")]),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    steps = errordetails_pb2.SuspendedStepsDetail()
    assert listed.details[1].Unpack(steps)
    assert [list(p.segments) for p in steps.suspended] == [["inner", "a"]]


def test_a_status_message_and_its_metadata_fit_their_budgets_as_sent() -> None:
    """grpc-message is percent-encoded: an emoji takes 12 bytes of it, so a message cut at
    1,000 characters could take 12 KB of the trailers; metadata values are cut by bytes."""
    status = to_status(errors.RunNotFound("a-%\U0001f600" * 500), grpc.StatusCode.NOT_FOUND)
    sent = sum(1 if " " <= c <= "~" and c != "%" else 3 * len(c.encode()) for c in status.message)
    assert MESSAGE_BYTES - 12 <= sent <= MESSAGE_BYTES
    assert status.message.startswith("run 'a-%\U0001f600a-%") and status.message.endswith("…")
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert 190 <= len(info.metadata["run_id"].encode()) <= 200


# -- through a real server: one test per code ---------------------------------------------


def new_run_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def assert_error(error: Any, code: grpc.StatusCode, reason: str, **metadata: str) -> None:
    assert error.code == code, error
    assert error.reason == reason, error
    assert error.domain == DOMAIN == "waystation.dev"
    for key, expected in metadata.items():
        assert error.metadata.get(key) == expected, (key, error.metadata)


async def assert_still_serving(stub: WorkflowServiceStub) -> None:
    listed = await stub.ListWorkflows(rr.ListWorkflowsRequest())
    assert "order-approval" in [wf.workflow_id for wf in listed.workflows]


async def start_order(stub: WorkflowServiceStub, run_id: str = "", **request: Any) -> Any:
    return await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="order-approval",
            run_id=run_id or new_run_id("order"),
            input_data=value(ORDER),
            **request,
        )
    )


async def run_count(stub: WorkflowServiceStub) -> int:
    return len((await stub.ListRuns(rr.ListRunsRequest(page_size=1000))).runs)


async def test_not_found_names_the_missing_run_or_workflow(stub: WorkflowServiceStub) -> None:
    """An unknown run is NOT_FOUND RUN_NOT_FOUND; an unknown workflow is NOT_FOUND
    WORKFLOW_NOT_FOUND, from GetWorkflow, StartRun and CreateRun alike."""
    run_id = new_run_id("ghost")

    error = await call_error(stub.GetRun(rr.GetRunRequest(run_id=run_id)))
    assert_error(error, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND", run_id=run_id)
    error = await call_error(stub.CancelRun(rr.CancelRunRequest(run_id=run_id)))
    assert_error(error, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND", run_id=run_id)
    for call in (
        stub.GetWorkflow(rr.GetWorkflowRequest(workflow_id="nope")),
        stub.StartRun(rr.StartRunRequest(workflow_id="nope", input_data=value({}))),
        stub.CreateRun(rr.CreateRunRequest(workflow_id="nope")),
    ):
        error = await call_error(call)
        assert_error(error, grpc.StatusCode.NOT_FOUND, "WORKFLOW_NOT_FOUND", workflow_id="nope")
    assert await run_count(stub) == 0
    await assert_still_serving(stub)


async def test_already_exists_for_a_run_id_that_is_taken(stub: WorkflowServiceStub) -> None:
    """StartRun with the id of a run that is not PENDING, and CreateRun with a taken id,
    are ALREADY_EXISTS RUN_ALREADY_EXISTS; the existing run is untouched."""
    started = await start_order(stub)

    error = await call_error(start_order(stub, started.run_id))
    assert_error(
        error,
        grpc.StatusCode.ALREADY_EXISTS,
        "RUN_ALREADY_EXISTS",
        run_id=started.run_id,
        status="suspended",
    )
    run = await stub.GetRun(rr.GetRunRequest(run_id=started.run_id))
    assert (run.status, run.result.version) == (enums_pb2.RUN_STATUS_SUSPENDED, started.version)

    run_id = new_run_id("twice")
    await stub.CreateRun(rr.CreateRunRequest(workflow_id="order-approval", run_id=run_id))
    error = await call_error(
        stub.CreateRun(rr.CreateRunRequest(workflow_id="order-approval", run_id=run_id))
    )
    assert_error(
        error,
        grpc.StatusCode.ALREADY_EXISTS,
        "RUN_ALREADY_EXISTS",
        run_id=run_id,
        status="pending",
    )
    await assert_still_serving(stub)


async def test_already_exists_for_a_pending_run_of_another_workflow(
    stub: WorkflowServiceStub,
) -> None:
    """A PENDING run can only be started as the workflow it was created for."""
    run_id = new_run_id("pending")
    await stub.CreateRun(rr.CreateRunRequest(workflow_id="remember", run_id=run_id))

    error = await call_error(start_order(stub, run_id))

    assert_error(error, grpc.StatusCode.ALREADY_EXISTS, "RUN_ALREADY_EXISTS", run_id=run_id)
    run = await stub.GetRun(rr.GetRunRequest(run_id=run_id))
    assert (run.workflow_id, run.status) == ("remember", enums_pb2.RUN_STATUS_PENDING)
    await assert_still_serving(stub)


async def test_failed_precondition_lists_the_suspended_steps(stub: WorkflowServiceStub) -> None:
    """A refused resume is FAILED_PRECONDITION: RUN_NOT_SUSPENDED for a finished run,
    STEP_NOT_SUSPENDED with a SuspendedStepsDetail for a path to no suspended step."""
    started = await start_order(stub)

    error = await call_error(
        stub.ResumeRun(rr.ResumeRequest(run_id=started.run_id, step=path("validate")))
    )
    assert_error(
        error,
        grpc.StatusCode.FAILED_PRECONDITION,
        "STEP_NOT_SUSPENDED",
        run_id=started.run_id,
        step_path="validate",
    )
    assert error.suspended == [["approval"]]
    assert error.labels == {"manager": ["approval"]}

    await stub.CancelRun(rr.CancelRunRequest(run_id=started.run_id))
    error = await call_error(stub.ResumeRun(rr.ResumeRequest(run_id=started.run_id)))
    assert_error(
        error, grpc.StatusCode.FAILED_PRECONDITION, "RUN_NOT_SUSPENDED", run_id=started.run_id
    )
    await assert_still_serving(stub)


async def test_invalid_input_has_one_violation_per_problem_and_creates_no_run(
    stub: WorkflowServiceStub,
) -> None:
    """StartRun input that fails the workflow's input schema is INVALID_ARGUMENT
    INVALID_INPUT with a BadRequest violation per field; no run is left behind."""
    run_id = new_run_id("bad-input")

    error = await call_error(
        stub.StartRun(
            rr.StartRunRequest(
                workflow_id="order-approval",
                run_id=run_id,
                input_data=value({"order_id": "", "amount": -5}),
            )
        )
    )

    assert_error(
        error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT", workflow_id="order-approval"
    )
    assert set(error.violations) == {"input_data.order_id", "input_data.amount"}
    missing = await call_error(
        stub.StartRun(rr.StartRunRequest(workflow_id="order-approval", run_id=run_id))
    )
    assert_error(missing, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")
    assert set(missing.violations) == {"input_data"}
    not_found = await call_error(stub.GetRun(rr.GetRunRequest(run_id=run_id)))
    assert not_found.code == grpc.StatusCode.NOT_FOUND
    await assert_still_serving(stub)


def infinite_order() -> rr.StartRunRequest:
    """An order whose amount, "Infinity", passes its float schema but has no JSON form."""
    return rr.StartRunRequest(
        workflow_id="order-approval",
        input_data=value({"order_id": "o-1", "amount": "Infinity"}),
    )


async def test_a_non_finite_number_in_the_input_is_invalid_input(
    stub: WorkflowServiceStub,
) -> None:
    """User data is JSON (DESIGN.md §3): an input that validates only to a non-finite
    float is INVALID_INPUT naming the field, not an INTERNAL error."""
    error = await call_error(stub.StartRun(infinite_order()))

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")
    assert "input_data.amount" in error.violations
    await assert_still_serving(stub)


async def test_runs_can_still_be_written_after_a_write_that_failed(
    stub: WorkflowServiceStub,
) -> None:
    """A write that fails (here: a value the store cannot encode) leaves no transaction
    open: later StartRun and CreateRun calls are stored as usual, not UNAVAILABLE."""
    await call_error(stub.StartRun(infinite_order()))

    started = await start_order(stub)
    created = await stub.CreateRun(rr.CreateRunRequest(workflow_id="order-approval"))

    assert started.status == enums_pb2.RUN_STATUS_SUSPENDED
    assert created.status == enums_pb2.RUN_STATUS_PENDING
    assert await run_count(stub) == 2


async def test_a_value_that_is_not_json_is_invalid_argument(stub: WorkflowServiceStub) -> None:
    """A google.protobuf.Value holding NaN or infinity has no JSON form: the field is
    INVALID_ARGUMENT (not INTERNAL), and a run it was meant for is unchanged."""
    not_json = struct_pb2.Value(number_value=float("inf"))
    started = await stub.StartRun(rr.StartRunRequest(workflow_id="remember"))

    resumed = await call_error(
        stub.ResumeRun(rr.ResumeRequest(run_id=started.run_id, resume_data=not_json))
    )
    begun = await call_error(
        stub.StartRun(rr.StartRunRequest(workflow_id="remember", input_data=not_json))
    )

    for error, field in ((resumed, "resume_data"), (begun, "input_data")):
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
        assert error.domain == DOMAIN
        assert error.reason in ("INVALID_ARGUMENT", "INVALID_INPUT", "INVALID_RESUME_DATA")
        assert list(error.violations) == [field]
    run = await stub.GetRun(rr.GetRunRequest(run_id=started.run_id))
    assert (run.status, run.result.version) == (enums_pb2.RUN_STATUS_SUSPENDED, started.version)
    await assert_still_serving(stub)


@pytest.mark.parametrize(
    ("rpc", "req", "field"),
    [
        ("GetRun", rr.GetRunRequest(run_id=""), "run_id"),
        ("CancelRun", rr.CancelRunRequest(run_id=""), "run_id"),
        ("ResumeRun", rr.ResumeRequest(run_id=""), "run_id"),
        ("RestartRun", rr.RestartRunRequest(run_id=""), "run_id"),
        ("RestartRun", rr.RestartRunRequest(run_id="r" * 201), "run_id"),
        ("TimeTravelRun", rr.TimeTravelRunRequest(run_id="", step=path("a")), "run_id"),
        ("TimeTravelRun", rr.TimeTravelRunRequest(run_id="r" * 201, step=path("a")), "run_id"),
        ("GetWorkflow", rr.GetWorkflowRequest(workflow_id=""), "workflow_id"),
        ("CreateRun", rr.CreateRunRequest(workflow_id="order-approval", run_id="a b"), "run_id"),
        ("CreateRun", rr.CreateRunRequest(workflow_id="order-approval", run_id="x/y"), "run_id"),
        (
            "CreateRun",
            rr.CreateRunRequest(workflow_id="order-approval", run_id="r" * 201),
            "run_id",
        ),
        (
            "StartRun",
            rr.StartRunRequest(
                workflow_id="order-approval", run_id="no spaces", input_data=value(ORDER)
            ),
            "run_id",
        ),
        ("ListRuns", rr.ListRunsRequest(page_size=-1), "page_size"),
        ("ListWorkflows", rr.ListWorkflowsRequest(page_size=-1), "page_size"),
        ("ListRuns", rr.ListRunsRequest(page_token="not-a-token"), "page_token"),
        ("ListWorkflows", rr.ListWorkflowsRequest(page_token="abc"), "page_token"),
        ("ListRuns", rr.ListRunsRequest(statuses=[0]), "statuses"),
    ],
    ids=[
        "get-run-empty-id",
        "cancel-empty-id",
        "resume-empty-id",
        "restart-empty-id",
        "restart-id-too-long",
        "time-travel-empty-id",
        "time-travel-id-too-long",
        "get-workflow-empty-id",
        "create-id-with-space",
        "create-id-with-slash",
        "create-id-too-long",
        "start-malformed-id",
        "list-runs-negative-page-size",
        "list-workflows-negative-page-size",
        "list-runs-garbage-token",
        "list-workflows-garbage-token",
        "list-runs-unspecified-status",
    ],
)
async def test_invalid_argument_names_the_field(
    stub: WorkflowServiceStub, rpc: str, req: Any, field: str
) -> None:
    """A malformed request field is INVALID_ARGUMENT INVALID_ARGUMENT with one violation
    naming the field; nothing is created."""
    error = await call_error(getattr(stub, rpc)(req))

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert list(error.violations) == [field]
    assert await run_count(stub) == 0
    await assert_still_serving(stub)


LONG = "x" * 201


@pytest.mark.parametrize(
    ("rpc", "req", "field"),
    [
        (
            "StartRun",
            rr.StartRunRequest(
                workflow_id="order-approval", input_data=value(ORDER), resource_id=LONG
            ),
            "resource_id",
        ),
        (
            "StartRun",
            rr.StartRunRequest(
                workflow_id="order-approval", input_data=value(ORDER), request_id=LONG
            ),
            "request_id",
        ),
        (
            "CreateRun",
            rr.CreateRunRequest(workflow_id="order-approval", resource_id=LONG),
            "resource_id",
        ),
        ("ResumeRun", rr.ResumeRequest(run_id="r-1", label=LONG), "label"),
        ("ResumeRun", rr.ResumeRequest(run_id="r-1", step=path(*["s"] * 33)), "step"),
        ("ResumeRun", rr.ResumeRequest(run_id="r-1", step=path(LONG)), "step"),
        ("CancelRun", rr.CancelRunRequest(run_id="r-1", reason="x" * 1001), "reason"),
        ("ListRuns", rr.ListRunsRequest(resource_id=LONG), "resource_id"),
        ("ListRuns", rr.ListRunsRequest(workflow_id=LONG), "workflow_id"),
        (
            "StartRun",
            rr.StartRunRequest(workflow_id=LONG, input_data=value(ORDER)),
            "workflow_id",
        ),
        ("CreateRun", rr.CreateRunRequest(workflow_id=LONG), "workflow_id"),
        ("GetWorkflow", rr.GetWorkflowRequest(workflow_id=LONG), "workflow_id"),
    ],
    ids=[
        "start-resource-id",
        "start-request-id",
        "create-resource-id",
        "resume-label",
        "resume-path-too-deep",
        "resume-segment-too-long",
        "cancel-reason",
        "list-runs-resource-id",
        "list-runs-workflow-id",
        "start-workflow-id",
        "create-workflow-id",
        "get-workflow-id",
    ],
)
async def test_a_name_longer_than_the_server_keeps_is_invalid_argument(
    stub: WorkflowServiceStub, rpc: str, req: Any, field: str
) -> None:
    """Ids, labels and reasons have a longest accepted length, as run and workflow ids do:
    a 3 MB resource id was stored, and made every ListRuns page holding it too large."""
    error = await call_error(getattr(stub, rpc)(req))

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert list(error.violations) == [field]
    assert await run_count(stub) == 0
    await assert_still_serving(stub)


def test_the_engine_checks_a_workflow_ids_length_itself(tmp_path: Path) -> None:
    """The transport refuses a workflow id over 200 characters first (above), so the rows
    there pass without the engine's own check; the engine refuses it too: 201 characters
    are INVALID_ARGUMENT naming workflow_id, not a workflow that is merely not registered
    (NOT_FOUND, as 200 characters are)."""
    engine = Engine(SqliteStore(str(tmp_path / "unopened.db")), [])
    with pytest.raises(errors.WorkflowNotFound) as missing:
        engine.workflow("w" * MAX_ID)
    assert lookup(missing.value) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(errors.InvalidArgument) as refused:
        engine.workflow("w" * (MAX_ID + 1))
    assert lookup(refused.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in refused.value.violations] == ["workflow_id"]


async def test_a_step_path_of_32_segments_is_taken(stub: WorkflowServiceStub) -> None:
    """32 segments is the deepest path the server keeps (docs/api.md), so it reaches the
    run (here: one that does not exist); 33 is INVALID_ARGUMENT (above)."""
    error = await call_error(stub.ResumeRun(rr.ResumeRequest(run_id="r-1", step=path(*["s"] * 32))))
    assert_error(error, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")


async def test_error_details_fit_in_the_trailers_grpc_clients_accept(
    stub: WorkflowServiceStub,
) -> None:
    """Twenty-five unknown keys of a hundred emoji each: the violations, each cut to 200
    and 300 characters, made trailers over gRPC's 16 KiB, and the client got
    RESOURCE_EXHAUSTED "Stream removed" with no reason. The details now keep what fits
    and say how much they left out."""
    extra = {f"{i:02d}" + "\U0001f600" * 100: True for i in range(25)}
    request = rr.StartRunRequest(workflow_id="form", input_data=value(extra))
    call = stub.StartRun(request)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = await call_error(stub.StartRun(request))

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")
    assert 1 <= len(error.violations) < 25
    assert all(name.startswith("input_data.") for name in error.violations)
    assert error.metadata["omitted"].startswith(f"{25 - len(error.violations)} more ")
    trailers = dict(raised.value.trailing_metadata() or ())
    assert len(trailers["grpc-status-details-bin"]) <= DETAILS_BYTES
    assert len(error.message.encode()) <= MESSAGE_BYTES
    assert await run_count(stub) == 0
    await assert_still_serving(stub)


def test_a_list_too_large_to_answer_advises_a_smaller_page() -> None:
    page = rr.ListRunsResponse(runs=[message_pb2.Run(run_id="r", resource_id="x" * 100)] * 10)
    with pytest.raises(ResponseTooLarge, match="smaller page_size"):
        check_fits(page, 500)
    result = message_pb2.WorkflowResult(run_id="r", workflow_id="x" * 600)
    with pytest.raises(ResponseTooLarge, match="took effect"):
        check_fits(result, 500, "ResumeRun")
    with pytest.raises(ResponseTooLarge, match="GetRun changes nothing"):
        check_fits(message_pb2.Run(run_id="r", result=result), 500, "GetRun")


def _decode(token: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return result


def _encode(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_a_tampered_or_foreign_list_runs_page_token_is_invalid_argument(
    stub: WorkflowServiceStub,
) -> None:
    """A page token is only good, unmodified, for the filters it was made with."""
    resource = new_run_id("tenant")
    for _ in range(2):
        await stub.CreateRun(
            rr.CreateRunRequest(workflow_id="order-approval", resource_id=resource)
        )
    first = await stub.ListRuns(rr.ListRunsRequest(resource_id=resource, page_size=1))
    token = first.next_page_token
    assert token
    second = await stub.ListRuns(
        rr.ListRunsRequest(resource_id=resource, page_size=1, page_token=token)
    )
    assert len(second.runs) == 1 and second.runs[0].run_id != first.runs[0].run_id

    tampered = [
        _encode({**_decode(token), "t": "yesterday"}),
        _encode({**_decode(token), "f": "0" * 16}),
        _encode({"r": "x"}),
        _encode([1, 2]),
        token[:-3],
    ]
    requests = [
        rr.ListRunsRequest(resource_id=resource, page_size=1, page_token=t) for t in tampered
    ]
    requests.append(rr.ListRunsRequest(resource_id="another", page_size=1, page_token=token))
    for request in requests:
        error = await call_error(stub.ListRuns(request))
        assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        assert list(error.violations) == ["page_token"], request.page_token
    await assert_still_serving(stub)


async def test_aborted_for_a_version_mismatch_and_a_resume_conflict(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A stale expected_version is ABORTED VERSION_MISMATCH; a resume while another resume's
    continuation runs is ABORTED RESUME_CONFLICT."""
    started = await start_order(stub)
    error = await call_error(
        stub.ResumeRun(
            rr.ResumeRequest(
                run_id=started.run_id,
                resume_data=value({"approved": True, "approver": "maria"}),
                expected_version=started.version - 1,
            )
        )
    )
    assert_error(error, grpc.StatusCode.ABORTED, "VERSION_MISMATCH", run_id=started.run_id)

    log = tmp_path / "slow.log"
    counted = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="counted", input_data=value({"log": str(log), "seconds": 0.5})
        )
    )
    winner = asyncio.ensure_future(
        stub.ResumeRun(rr.ResumeRequest(run_id=counted.run_id, resume_data=value({"value": 1})))
    )

    async def running() -> bool:
        run = await stub.GetRun(rr.GetRunRequest(run_id=counted.run_id))
        return bool(run.status == enums_pb2.RUN_STATUS_RUNNING)

    await assert_eventually(running)
    error = await call_error(
        stub.ResumeRun(rr.ResumeRequest(run_id=counted.run_id, resume_data=value({"value": 2})))
    )
    assert_error(error, grpc.StatusCode.ABORTED, "RESUME_CONFLICT", run_id=counted.run_id)
    assert (await winner).status == enums_pb2.RUN_STATUS_SUCCESS
    await assert_still_serving(stub)


@pytest.mark.parametrize(
    ("rpc", "req", "fields"),
    [
        (
            "StartRun",
            rr.StartRunRequest(
                workflow_id="",
                run_id="a b",
                tracing_options=message_pb2.TracingOptions(trace_id="zz", parent_span_id="qq"),
            ),
            ["run_id", "tracing_options.parent_span_id", "tracing_options.trace_id", "workflow_id"],
        ),
        ("ResumeRun", rr.ResumeRequest(run_id="", retry_count=-1), ["retry_count", "run_id"]),
        ("CreateRun", rr.CreateRunRequest(workflow_id="", run_id="x/y"), ["run_id", "workflow_id"]),
        (
            "ListRuns",
            rr.ListRunsRequest(page_size=-1, page_token="garbage", statuses=[42]),
            ["page_size", "page_token", "statuses"],
        ),
        (
            "ListWorkflows",
            rr.ListWorkflowsRequest(page_size=-1, page_token="abc"),
            ["page_size", "page_token"],
        ),
        (
            "TimeTravelRun",
            rr.TimeTravelRunRequest(
                run_id="", tracing_options=message_pb2.TracingOptions(parent_span_id="00")
            ),
            ["run_id", "tracing_options.parent_span_id", "tracing_options.trace_id"],
        ),
    ],
    ids=["start", "resume", "create", "list-runs", "list-workflows", "time-travel"],
)
async def test_a_request_with_several_problems_names_every_one(
    stub: WorkflowServiceStub, rpc: str, req: Any, fields: list[str]
) -> None:
    """One BadRequest violation per problem (DESIGN.md §5), not only the first one found:
    a client fixes its request in one round trip."""
    error = await call_error(getattr(stub, rpc)(req))

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert sorted(error.violations) == fields
    assert await run_count(stub) == 0
    await assert_still_serving(stub)


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


@pytest.mark.parametrize(
    ("rpc", "req"),
    [
        ("ResumeRun", rr.ResumeRequest(run_id="ghost-1")),
        ("CancelRun", rr.CancelRunRequest(run_id="ghost-1")),
        ("RestartRun", rr.RestartRunRequest(run_id="ghost-1")),
        ("TimeTravelRun", rr.TimeTravelRunRequest(run_id="ghost-1", step=path("a"))),
        ("DeleteRun", rr.DeleteRunRequest(run_id="ghost-1")),
    ],
    ids=["resume", "cancel", "restart", "time-travel", "delete"],
)
async def test_every_rpc_that_names_a_run_answers_run_not_found_for_an_unknown_one(
    stub: WorkflowServiceStub, rpc: str, req: Any
) -> None:
    """An unknown run id is NOT_FOUND RUN_NOT_FOUND with the id in the metadata, whichever
    unary RPC names it, and the attempt leaves no run behind."""
    error = await call_error(getattr(stub, rpc)(req))

    assert_error(error, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND", run_id="ghost-1")
    assert await run_count(stub) == 0
    await assert_still_serving(stub)


async def test_watch_run_of_an_unknown_run_ends_with_run_not_found(
    stub: WorkflowServiceStub,
) -> None:
    """The WatchRun stream maps errors through the same table: an unknown run ends the
    stream with NOT_FOUND RUN_NOT_FOUND."""
    error = await call_error(_drain(stub.WatchRun(rr.WatchRunRequest(run_id="ghost-1"))))

    assert_error(error, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND", run_id="ghost-1")
    await assert_still_serving(stub)


async def test_a_method_the_service_does_not_have_is_unimplemented(
    channel: grpc.aio.Channel, stub: WorkflowServiceStub
) -> None:
    """A call to an unknown method of the service is UNIMPLEMENTED, and harmless."""
    unknown = channel.unary_unary("/waystation.v1.WorkflowService/NoSuchMethod")

    error = await call_error(unknown(b""))

    assert error.code == grpc.StatusCode.UNIMPLEMENTED
    await assert_still_serving(stub)
