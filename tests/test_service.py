"""WorkflowService through a real grpc.aio server and a real SQLite file: workflow
definitions, creating and starting runs, idempotent starts, listing, cancelling, failures,
deadlines and the message size limit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, timestamp_pb2
from pydantic import BaseModel, ConfigDict

from tests.conftest import FLOW_WORKFLOWS, TEST_WORKFLOWS, serving, settings_for
from tests.support.api import (
    assert_eventually,
    call_error,
    path,
    paths,
    rich_error,
    struct,
    to_json,
    value,
)
from tests.support.faulty_store import FaultyStore, is_create, settles, touches_step
from tests.support.workflows import Booking, lines
from waystation.api.v1 import enums_pb2, message_pb2, service_pb2_grpc
from waystation.api.v1 import request_response_pb2 as rr
from waystation.engine import RunStatus, StartCommand, load_workflows, schema
from waystation.engine.errors import RunAlreadyExists
from waystation.engine.events import EventType, make_event
from waystation.engine.executor import Execution
from waystation.engine.model import RunRecord, RunSnapshot, StepStatus
from waystation.storage import SqliteStore
from waystation.transport import RunningServer, create_server

Stub = service_pb2_grpc.WorkflowServiceStub
SUSPENDED = enums_pb2.RUN_STATUS_SUSPENDED

# Every committed workflow of the modules the test server loads, by id.
REGISTERED = sorted(wf.id for wf in load_workflows(TEST_WORKFLOWS))
NAMED_IN_TESTS = {"counted", "nested-counted", "slow", "remember", "fails"}
EXAMPLES = {"order-approval", "document-review"}


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "side-effects.log"


def logged(log: Path, seconds: float = 0.0) -> Any:
    return value({"log": str(log), "seconds": seconds})


async def start_counted(stub: Stub, log: Path, **fields: Any) -> message_pb2.WorkflowResult:
    return await stub.StartRun(
        rr.StartRunRequest(workflow_id="counted", input_data=logged(log), **fields)
    )


async def status_of(stub: Stub, run_id: str) -> int:
    run = await stub.GetRun(rr.GetRunRequest(run_id=run_id))
    return run.status


def between(earlier_ns: int, later_ns: int) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds((earlier_ns + later_ns) // 2)
    return out


def schema_of(node: message_pb2.StepNode, name: str) -> dict[str, Any]:
    return to_json(getattr(node, name))


# -- workflow definitions -------------------------------------------------------------------


async def test_list_workflows_returns_every_registered_id_in_order(stub: Stub) -> None:
    """ListWorkflows returns every registered workflow, ordered by id, on one page."""
    response = await stub.ListWorkflows(rr.ListWorkflowsRequest())
    assert [wf.workflow_id for wf in response.workflows] == REGISTERED
    assert set(REGISTERED) >= NAMED_IN_TESTS | EXAMPLES
    assert response.next_page_token == ""


async def test_list_workflows_pages_cover_every_id_once(stub: Stub) -> None:
    """Paging ListWorkflows with page_size/page_token yields every id once, in order, and the
    last page has no next token."""
    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    for _ in range(len(REGISTERED)):
        page = await stub.ListWorkflows(rr.ListWorkflowsRequest(page_size=4, page_token=token))
        seen += [wf.workflow_id for wf in page.workflows]
        sizes.append(len(page.workflows))
        token = page.next_page_token
        if not token:
            break
    assert seen == REGISTERED
    full, rest = divmod(len(REGISTERED), 4)
    assert sizes == [4] * full + ([rest] if rest else [])


async def test_get_workflow_describes_the_order_approval_step_graph_with_schemas(
    stub: Stub,
) -> None:
    """GetWorkflow returns the step graph of order-approval, and the approval step carries the
    JSON Schemas of its input, output, suspend payload and resume data."""
    workflow = await stub.GetWorkflow(rr.GetWorkflowRequest(workflow_id="order-approval"))

    assert workflow.workflow_id == "order-approval"
    assert [s.id for s in workflow.steps] == ["validate", "approval", "fulfil"]
    assert all(s.kind == enums_pb2.STEP_KIND_STEP for s in workflow.steps)
    assert set(schema_of(workflow, "input_schema")["properties"]) == {"order_id", "amount"}
    approval = workflow.steps[1]
    assert approval.can_suspend
    assert not workflow.steps[0].can_suspend
    assert "requires_approval" in schema_of(approval, "input_schema")["properties"]
    assert set(schema_of(approval, "output_schema")["properties"]) == {
        "order_id",
        "approved",
        "approver",
        "note",
    }
    assert set(schema_of(approval, "suspend_schema")["properties"]) == {
        "order_id",
        "amount",
        "reason",
    }
    resume = schema_of(approval, "resume_schema")
    assert resume["type"] == "object"
    assert set(resume["properties"]) == {"approved", "approver", "note"}
    assert sorted(resume["required"]) == ["approved", "approver"]


async def test_get_workflow_shows_a_nested_workflow_with_its_children(stub: Stub) -> None:
    """GetWorkflow of document-review shows the nested review workflow as a WORKFLOW node
    whose children are its two suspending steps, each with its resume schema."""
    workflow = await stub.GetWorkflow(rr.GetWorkflowRequest(workflow_id="document-review"))

    assert [s.id for s in workflow.steps] == ["prepare", "review", "publish"]
    review = workflow.steps[1]
    assert review.kind == enums_pb2.STEP_KIND_WORKFLOW
    assert review.can_suspend
    assert [c.id for c in review.children] == ["legal-review", "editor-signoff"]
    legal, editor = review.children
    assert legal.kind == enums_pb2.STEP_KIND_STEP
    assert set(schema_of(legal, "resume_schema")["properties"]) == {
        "approved",
        "reviewer",
        "comments",
    }
    assert set(schema_of(editor, "resume_schema")["properties"]) == {"signed_off", "editor"}
    assert not workflow.steps[0].children


async def test_get_workflow_of_an_unknown_id_is_not_found(stub: Stub) -> None:
    """GetWorkflow of an id that is not registered fails NOT_FOUND / WORKFLOW_NOT_FOUND."""
    error = await call_error(stub.GetWorkflow(rr.GetWorkflowRequest(workflow_id="nope")))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "WORKFLOW_NOT_FOUND"


# -- creating and starting runs ---------------------------------------------------------------


async def test_create_run_makes_a_pending_run_that_start_run_then_starts(stub: Stub) -> None:
    """CreateRun makes a PENDING run with the caller's run_id and resource_id; StartRun with
    that run_id starts it (here up to its suspension) and the run keeps its resource."""
    created = await stub.CreateRun(
        rr.CreateRunRequest(
            workflow_id="order-approval", run_id="order-7", resource_id="customer-42"
        )
    )
    assert created.run_id == "order-7"
    assert created.resource_id == "customer-42"
    assert created.status == enums_pb2.RUN_STATUS_PENDING
    assert (await status_of(stub, "order-7")) == enums_pb2.RUN_STATUS_PENDING

    result = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="order-approval",
            run_id="order-7",
            input_data=value({"order_id": "A-7", "amount": 250}),
        )
    )

    assert result.run_id == "order-7"
    assert result.status == enums_pb2.RUN_STATUS_SUSPENDED
    assert paths(result) == [["approval"]]
    run = await stub.GetRun(rr.GetRunRequest(run_id="order-7"))
    assert run.resource_id == "customer-42"
    assert run.status == enums_pb2.RUN_STATUS_SUSPENDED


async def test_start_run_with_return_immediately_answers_running_and_the_run_finishes(
    stub: Stub, log: Path
) -> None:
    """StartRun with return_immediately answers RUNNING at once; the run goes on and GetRun
    later shows SUCCESS, with the step run once."""
    result = await stub.StartRun(
        rr.StartRunRequest(workflow_id="slow", input_data=logged(log, 0.3), return_immediately=True)
    )
    assert result.status == enums_pb2.RUN_STATUS_RUNNING
    assert result.run_id

    async def settled() -> bool:
        return (await status_of(stub, result.run_id)) == enums_pb2.RUN_STATUS_SUCCESS

    await assert_eventually(settled)
    run = await stub.GetRun(rr.GetRunRequest(run_id=result.run_id))
    assert to_json(run.result.result) == {"slept": 0.3}
    assert lines(log) == ["slow"]


async def test_start_run_with_a_repeated_request_id_returns_the_first_run(
    stub: Stub, log: Path
) -> None:
    """A repeated StartRun request_id returns the first call's run and outcome; the steps ran
    once and only one run exists."""
    first = await start_counted(stub, log, request_id="start-once")
    again = await start_counted(stub, log, request_id="start-once")

    assert again.run_id == first.run_id
    assert again.status == first.status == enums_pb2.RUN_STATUS_SUSPENDED
    assert again.version == first.version
    assert lines(log) == ["one"]
    listed = await stub.ListRuns(rr.ListRunsRequest(workflow_id="counted"))
    assert [r.run_id for r in listed.runs] == [first.run_id]


async def test_a_start_request_id_reused_with_other_input_is_refused_and_starts_nothing(
    stub: Stub, log: Path, tmp_path: Path
) -> None:
    """A request id names one call: a StartRun that reuses it with other input is
    INVALID_ARGUMENT on `request_id` and starts nothing (the first call's run would pass
    for a run of this input). A retry that waits or traces differently is the same call
    and gets the first run, also when it writes a number another way (0 as -0.0, as
    JavaScript's JSON.stringify loses the sign: an outside audit found it refused)."""
    first = await start_counted(stub, log, request_id="start-once")
    other_log = tmp_path / "other.log"

    error = await call_error(start_counted(stub, other_log, request_id="start-once"))

    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert set(error.violations) == {"request_id"}
    assert "first used for a StartRun with other arguments" in error.violations["request_id"]
    tagged = message_pb2.TracingOptions(tags=["retry"])
    retry = rr.StartRunRequest(
        workflow_id="counted",
        input_data=logged(log, seconds=-0.0),
        request_id="start-once",
        return_immediately=True,
        tracing_options=tagged,
    )
    retried = await stub.StartRun(retry)
    assert (retried.run_id, retried.version) == (first.run_id, first.version)
    assert lines(log) == ["one"]
    assert not other_log.exists()
    listed = await stub.ListRuns(rr.ListRunsRequest(workflow_id="counted"))
    assert [r.run_id for r in listed.runs] == [first.run_id]


async def test_a_start_request_id_is_scoped_to_its_workflow_and_a_resume_one_to_its_run(
    stub: Stub, log: Path
) -> None:
    """One request id starts a run of each of two workflows (docs/api.md: a StartRun's key
    is its workflow and resource), and resumes each of two runs: none is a replay of
    another's outcome."""
    counted = await start_counted(stub, log, request_id="same-id")
    slow = await stub.StartRun(
        rr.StartRunRequest(workflow_id="slow", input_data=logged(log), request_id="same-id")
    )
    assert (slow.workflow_id, counted.workflow_id) == ("slow", "counted")
    assert slow.run_id != counted.run_id
    other = await start_counted(stub, log)
    resumed = [
        await stub.ResumeRun(
            rr.ResumeRequest(run_id=r.run_id, resume_data=value({"value": 1}), request_id="r-1")
        )
        for r in (counted, other)
    ]
    assert [r.run_id for r in resumed] == [counted.run_id, other.run_id]
    assert [r.status for r in resumed] == [enums_pb2.RUN_STATUS_SUCCESS] * 2


async def test_a_repeated_immediate_start_returns_at_once_with_the_same_run(
    stub: Stub, log: Path
) -> None:
    """Repeating a return_immediately StartRun with its request_id while the run executes
    answers at once with the same run (the first call's outcome), without waiting for the
    run to settle and without starting it again."""
    request = rr.StartRunRequest(
        workflow_id="slow",
        input_data=logged(log, 2),
        request_id="start-immediately",
        return_immediately=True,
    )
    first = await stub.StartRun(request)
    assert first.status == enums_pb2.RUN_STATUS_RUNNING

    began = time.monotonic()
    again = await stub.StartRun(request, timeout=5)

    assert time.monotonic() - began < 1
    assert again.run_id == first.run_id
    assert again.status == enums_pb2.RUN_STATUS_RUNNING

    async def settled() -> bool:
        return (await status_of(stub, first.run_id)) == enums_pb2.RUN_STATUS_SUCCESS

    await assert_eventually(settled)
    assert lines(log) == ["slow"]


async def test_concurrent_start_runs_with_one_request_id_start_one_run(
    stub: Stub, log: Path
) -> None:
    """Two StartRun calls with the same request_id sent at once both succeed with the same
    run: the second returns the first call's outcome instead of acting twice or failing."""
    first, second = await asyncio.gather(
        start_counted(stub, log, request_id="start-racing"),
        start_counted(stub, log, request_id="start-racing"),
        return_exceptions=True,
    )

    assert not isinstance(first, BaseException), first
    assert not isinstance(second, BaseException), second
    assert first.run_id == second.run_id
    assert first.status == second.status == enums_pb2.RUN_STATUS_SUSPENDED
    assert lines(log) == ["one"]


async def test_starts_accepted_in_one_turn_with_one_request_id_race_in_the_insert(
    server: RunningServer, log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two starts with one request_id that both find it free (in one turn of the loop) race
    in the insert, which rides with the first step's RUNNING record: one run is stored and
    runs; the other start finds the key taken by that commit and answers the same run. The
    lost insert is nobody's error, and its execution is neither tracked nor driven."""
    engine = server.engine
    command = StartCommand(
        "counted", input_data={"log": str(log), "seconds": 0.0}, request_id="start-in-one-turn"
    )

    first, second = await asyncio.gather(
        engine.start_run(command), engine.start_run(command), return_exceptions=True
    )

    assert not isinstance(first, BaseException), first
    assert not isinstance(second, BaseException), second
    assert first.run_id == second.run_id
    assert first.status is second.status is RunStatus.SUSPENDED
    assert lines(log) == ["one"]
    assert not engine._active
    errors = [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not errors, errors


async def test_a_start_whose_first_commit_finds_its_run_id_taken_changes_nothing(
    server: RunningServer, stub: Stub, log: Path
) -> None:
    """A start that found its run id free but whose first commit (the insert with the first
    step's RUNNING record) finds it taken by then fails RUN_ALREADY_EXISTS with the stored
    run's status; its steps never run and the stored run is untouched."""
    taken = await start_counted(stub, log)
    before = await stub.GetRun(rr.GetRunRequest(run_id=taken.run_id))
    workflow = server.engine.workflow("counted")
    run = RunRecord(
        taken.run_id,
        "counted",
        "",
        RunStatus.RUNNING,
        version=1,
        input={"log": str(log), "seconds": 0.0},
    )
    execution = Execution(server.engine.store, workflow, RunSnapshot(run, {}), stored=False)
    execution.pending_events = [make_event(run, EventType.RUN_STARTED)]

    with pytest.raises(RunAlreadyExists) as raised:
        await execution.drive()

    assert raised.value.metadata == {"run_id": taken.run_id, "status": "suspended"}
    assert lines(log) == ["one"]
    after = await stub.GetRun(rr.GetRunRequest(run_id=taken.run_id))
    assert after == before


async def test_a_start_writes_its_insert_with_the_first_steps_running_record(
    server: RunningServer, stub: Stub, log: Path
) -> None:
    """A start that waits for its result stores the run with its first step's RUNNING
    record, in one transaction: counted (one, then a suspending gate) takes three, not four.
    The events still begin with RUN_STARTED and follow each other without a gap. A start
    answered at once still stores the run on its own, before it answers: four."""
    store = server.engine.store
    assert isinstance(store, SqliteStore)
    before = store._batches
    started = await start_counted(stub, log)
    assert store._batches - before == 3
    events = await store.list_events(started.run_id, 0, 100)
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events][:3] == [
        EventType.RUN_STARTED.value,
        EventType.STEP_STARTED.value,
        EventType.STEP_SUCCEEDED.value,
    ]

    before = store._batches
    immediate = await start_counted(stub, log, return_immediately=True)

    async def suspended() -> bool:
        return (await status_of(stub, immediate.run_id)) == SUSPENDED

    await assert_eventually(suspended)
    assert store._batches - before == 4


async def test_create_run_with_a_repeated_request_id_returns_the_first_run(stub: Stub) -> None:
    """A repeated CreateRun request_id returns the run the first call created; no second run
    is made."""
    request = rr.CreateRunRequest(workflow_id="counted", resource_id="r", request_id="create-1")
    first = await stub.CreateRun(request)
    again = await stub.CreateRun(request)

    assert again.run_id == first.run_id
    assert again.status == enums_pb2.RUN_STATUS_PENDING
    listed = await stub.ListRuns(rr.ListRunsRequest(workflow_id="counted"))
    assert [r.run_id for r in listed.runs] == [first.run_id]


async def test_a_create_request_id_reused_for_another_run_id_is_refused(stub: Stub) -> None:
    """A CreateRun that reuses a request id to name a run of its own is INVALID_ARGUMENT
    on `request_id`, and creates nothing."""
    asked = {"workflow_id": "counted", "resource_id": "r", "request_id": "create-1"}
    first = await stub.CreateRun(rr.CreateRunRequest(**asked))

    error = await call_error(stub.CreateRun(rr.CreateRunRequest(**asked, run_id="named")))

    assert (error.code, set(error.violations)) == (grpc.StatusCode.INVALID_ARGUMENT, {"request_id"})
    listed = await stub.ListRuns(rr.ListRunsRequest(workflow_id="counted"))
    assert [r.run_id for r in listed.runs] == [first.run_id]


async def test_concurrent_create_runs_with_one_request_id_create_one_run(stub: Stub) -> None:
    """Two CreateRun calls with the same request_id sent at once both succeed with the same
    run, instead of one failing ALREADY_EXISTS for a run that does not exist."""
    request = rr.CreateRunRequest(workflow_id="counted", request_id="create-racing")
    first, second = await asyncio.gather(
        stub.CreateRun(request), stub.CreateRun(request), return_exceptions=True
    )

    assert not isinstance(first, BaseException), first
    assert not isinstance(second, BaseException), second
    assert first.run_id == second.run_id
    listed = await stub.ListRuns(rr.ListRunsRequest(workflow_id="counted"))
    assert [r.run_id for r in listed.runs] == [first.run_id]


async def test_get_run_returns_the_latest_result(stub: Stub, log: Path) -> None:
    """After a start and a resume, GetRun returns the result of the resume: SUCCESS, the
    output, every step's result and the same version."""
    started = await start_counted(stub, log)
    resumed = await stub.ResumeRun(
        rr.ResumeRequest(run_id=started.run_id, resume_data=value({"value": 41}))
    )
    assert resumed.status == enums_pb2.RUN_STATUS_SUCCESS

    run = await stub.GetRun(rr.GetRunRequest(run_id=started.run_id))

    assert run.status == enums_pb2.RUN_STATUS_SUCCESS
    assert run.result.status == enums_pb2.RUN_STATUS_SUCCESS
    assert to_json(run.result.result) == {"value": 42}
    assert run.result.version == resumed.version > started.version
    assert set(run.result.steps) == {"one", "gate", "two"}
    assert all(s.status == enums_pb2.STEP_STATUS_SUCCESS for s in run.result.steps.values())
    assert to_json(run.result.steps["gate"].resume_payload) == {"value": 41}
    assert not run.result.suspended


# -- listing runs ---------------------------------------------------------------------------


async def test_list_runs_filters_by_workflow_status_resource_and_time(
    stub: Stub, log: Path
) -> None:
    """ListRuns filters by workflow_id, statuses, resource_id and the create-time window
    (after is inclusive, before exclusive), and the filters combine."""
    await stub.CreateRun(rr.CreateRunRequest(workflow_id="counted", run_id="r1", resource_id="al"))
    await start_counted(stub, log, run_id="r2", resource_id="bo")
    await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="slow", run_id="r3", resource_id="al", input_data=logged(log)
        )
    )
    await stub.StartRun(rr.StartRunRequest(workflow_id="fails", run_id="r4", resource_id="bo"))

    async def ids(**filters: Any) -> set[str]:
        response = await stub.ListRuns(rr.ListRunsRequest(**filters))
        return {r.run_id for r in response.runs}

    everything = await stub.ListRuns(rr.ListRunsRequest())
    created = {r.run_id: r.create_time.ToNanoseconds() for r in everything.runs}
    assert set(created) == {"r1", "r2", "r3", "r4"}
    # Window edges halfway between runs: the exact-edge case has a test of its own.
    r1_r2, r3_r4 = between(created["r1"], created["r2"]), between(created["r3"], created["r4"])
    assert await ids(workflow_id="counted") == {"r1", "r2"}
    assert await ids(statuses=[SUSPENDED, enums_pb2.RUN_STATUS_SUCCESS]) == {"r2", "r3"}
    assert await ids(statuses=[enums_pb2.RUN_STATUS_FAILED]) == {"r4"}
    assert await ids(resource_id="al") == {"r1", "r3"}
    assert await ids(workflow_id="counted", resource_id="al") == {"r1"}
    assert await ids(create_time_after=r1_r2, create_time_before=r3_r4) == {"r2", "r3"}
    assert await ids(create_time_after=r3_r4) == {"r4"}
    assert await ids(create_time_before=r1_r2) == {"r1"}
    assert await ids(create_time_after=r1_r2, resource_id="bo") == {"r2", "r4"}


async def test_list_runs_time_window_edges_use_a_runs_own_create_time(stub: Stub) -> None:
    """A run's reported create_time as create_time_after includes the run ("at or after"),
    and as create_time_before excludes it ("before"), for every run."""
    for i in range(60):
        await stub.CreateRun(rr.CreateRunRequest(workflow_id="counted", run_id=f"edge-{i:02}"))
    listed = await stub.ListRuns(rr.ListRunsRequest(page_size=100))
    assert len(listed.runs) == 60

    misplaced = []
    for run in listed.runs:
        at_or_after = await stub.ListRuns(
            rr.ListRunsRequest(create_time_after=run.create_time, page_size=100)
        )
        before = await stub.ListRuns(
            rr.ListRunsRequest(create_time_before=run.create_time, page_size=100)
        )
        if run.run_id not in {r.run_id for r in at_or_after.runs}:
            misplaced.append(f"{run.run_id} missing from create_time_after=its create_time")
        if run.run_id in {r.run_id for r in before.runs}:
            misplaced.append(f"{run.run_id} listed by create_time_before=its create_time")
    assert misplaced == []


async def test_list_runs_pages_newest_first_without_duplicates_or_gaps(stub: Stub) -> None:
    """Three pages of page_size 2 list five runs newest first, each exactly once, and the last
    page has no next token."""
    made = []
    for i in range(5):
        run = await stub.CreateRun(rr.CreateRunRequest(workflow_id="counted", run_id=f"page-{i}"))
        made.append(run.run_id)

    pages: list[list[str]] = []
    token = ""
    for _ in range(3):
        page = await stub.ListRuns(rr.ListRunsRequest(page_size=2, page_token=token))
        pages.append([r.run_id for r in page.runs])
        token = page.next_page_token
    assert token == ""
    assert pages == [["page-4", "page-3"], ["page-2", "page-1"], ["page-0"]]
    assert [r for p in pages for r in p] == list(reversed(made))


async def test_a_full_last_page_has_no_next_token(stub: Stub) -> None:
    """Three runs on pages of three: one page, and no token that leads to an empty one."""
    for i in range(3):
        await stub.CreateRun(rr.CreateRunRequest(workflow_id="counted", run_id=f"full-{i}"))
    page = await stub.ListRuns(rr.ListRunsRequest(page_size=3))
    assert (len(page.runs), page.next_page_token) == (3, "")


async def test_list_runs_and_list_workflows_pages_hold_at_most_1000(tmp_path: Path) -> None:
    """A page_size above 1,000 (the proto's maximum) is taken as 1,000, for runs and for
    workflows: the rest comes on the next page."""
    settings = settings_for(tmp_path / "many.db", workflows=["tests.support.many_workflows"])
    running = await create_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = service_pb2_grpc.WorkflowServiceStub(channel)
            first = await stub.ListWorkflows(rr.ListWorkflowsRequest(page_size=5000))
            assert len(first.workflows) == 1000 and first.next_page_token
            rest = await stub.ListWorkflows(
                rr.ListWorkflowsRequest(page_size=5000, page_token=first.next_page_token)
            )
            assert [w.workflow_id for w in rest.workflows] == ["many-1000"]
            for chunk in range(0, 1001, 100):
                await asyncio.gather(
                    *(
                        stub.CreateRun(
                            rr.CreateRunRequest(workflow_id="many-0000", run_id=f"m-{i}")
                        )
                        for i in range(chunk, min(chunk + 100, 1001))
                    )
                )
            runs = await stub.ListRuns(rr.ListRunsRequest(page_size=5000))
            assert len(runs.runs) == 1000 and runs.next_page_token
    finally:
        await running.stop(grace=0)


async def test_list_workflows_without_a_page_size_answers_pages_of_100(tmp_path: Path) -> None:
    """ListWorkflows with no page_size answers 100 workflows a page (the proto's default)
    and a token for the rest: 1,001 registered workflows come on eleven pages, each id
    once and in order."""
    settings = settings_for(tmp_path / "many.db", workflows=["tests.support.many_workflows"])
    async with (
        serving(settings) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = Stub(channel)
        seen: list[str] = []
        sizes: list[int] = []
        token = ""
        for _ in range(20):
            page = await stub.ListWorkflows(rr.ListWorkflowsRequest(page_token=token))
            seen += [wf.workflow_id for wf in page.workflows]
            sizes.append(len(page.workflows))
            token = page.next_page_token
            if not token:
                break
        assert sizes == [100] * 10 + [1]
        assert seen == [f"many-{i:04d}" for i in range(1001)]


async def test_a_page_token_for_another_time_window_is_invalid(stub: Stub) -> None:
    """A token issued under one `create_time_before` is refused under another, as under
    other filters (it would skip or repeat runs)."""
    for i in range(3):
        await stub.CreateRun(rr.CreateRunRequest(workflow_id="counted", run_id=f"win-{i}"))
    later = timestamp_pb2.Timestamp()
    later.FromNanoseconds(time.time_ns() + 10**9)
    much_later = timestamp_pb2.Timestamp()
    much_later.FromNanoseconds(time.time_ns() + 10**12)
    first = await stub.ListRuns(rr.ListRunsRequest(page_size=1, create_time_before=later))
    assert first.next_page_token
    request = rr.ListRunsRequest(
        page_size=1, create_time_before=much_later, page_token=first.next_page_token
    )
    error = await call_error(stub.ListRuns(request))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in error.violations


async def test_list_runs_page_token_with_other_filters_is_invalid(stub: Stub) -> None:
    """A page token used with filters other than those it was issued for is rejected
    INVALID_ARGUMENT, naming page_token."""
    for i in range(3):
        await stub.CreateRun(rr.CreateRunRequest(workflow_id="counted", run_id=f"tok-{i}"))
    first = await stub.ListRuns(rr.ListRunsRequest(workflow_id="counted", page_size=1))
    assert first.next_page_token

    error = await call_error(
        stub.ListRuns(
            rr.ListRunsRequest(workflow_id="slow", page_size=1, page_token=first.next_page_token)
        )
    )

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_ARGUMENT"
    assert "page_token" in error.violations


# -- cancelling -----------------------------------------------------------------------------


async def test_cancel_of_a_suspended_run_cancels_it_and_a_later_resume_fails(
    stub: Stub, log: Path
) -> None:
    """CancelRun of a SUSPENDED run makes it CANCELED; a later ResumeRun fails
    FAILED_PRECONDITION / RUN_NOT_SUSPENDED and the gate never runs."""
    started = await start_counted(stub, log)

    canceled = await stub.CancelRun(rr.CancelRunRequest(run_id=started.run_id, reason="no"))

    assert canceled.status == enums_pb2.RUN_STATUS_CANCELED
    assert canceled.result.error.message == "no"
    assert (await status_of(stub, started.run_id)) == enums_pb2.RUN_STATUS_CANCELED
    error = await call_error(
        stub.ResumeRun(rr.ResumeRequest(run_id=started.run_id, resume_data=value({"value": 1})))
    )
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "RUN_NOT_SUSPENDED"
    assert lines(log) == ["one"]


async def test_cancel_of_a_finished_run_is_a_no_op(stub: Stub, log: Path) -> None:
    """CancelRun of a run that finished changes nothing: it stays SUCCESS, same version."""
    done = await stub.StartRun(rr.StartRunRequest(workflow_id="slow", input_data=logged(log)))
    assert done.status == enums_pb2.RUN_STATUS_SUCCESS

    canceled = await stub.CancelRun(rr.CancelRunRequest(run_id=done.run_id))

    assert canceled.status == enums_pb2.RUN_STATUS_SUCCESS
    run = await stub.GetRun(rr.GetRunRequest(run_id=done.run_id))
    assert run.status == enums_pb2.RUN_STATUS_SUCCESS
    assert run.result.version == done.version


async def start_slow_in_background(stub: Stub, log: Path) -> str:
    started = await stub.StartRun(
        rr.StartRunRequest(workflow_id="slow", input_data=logged(log, 5), return_immediately=True)
    )
    assert started.status == enums_pb2.RUN_STATUS_RUNNING
    return started.run_id


async def wait_until_step_runs(stub: Stub, run_id: str, step: str) -> None:
    async def step_running() -> bool:
        run = await stub.GetRun(rr.GetRunRequest(run_id=run_id))
        return step in run.result.steps and (
            run.result.steps[step].status == enums_pb2.STEP_STATUS_RUNNING
        )

    await assert_eventually(step_running)


async def test_cancel_of_a_running_run_stops_its_step_quickly(stub: Stub, log: Path) -> None:
    """CancelRun of a RUNNING run whose step is in a 5 s sleep answers CANCELED well before
    the step would have finished; the step shows CANCELED and never recorded its side
    effect."""
    run_id = await start_slow_in_background(stub, log)
    await wait_until_step_runs(stub, run_id, "slow")

    began = time.monotonic()
    canceled = await stub.CancelRun(rr.CancelRunRequest(run_id=run_id), timeout=4)

    assert time.monotonic() - began < 2
    assert canceled.status == enums_pb2.RUN_STATUS_CANCELED
    assert canceled.result.status == enums_pb2.RUN_STATUS_CANCELED
    assert canceled.result.steps["slow"].status == enums_pb2.STEP_STATUS_CANCELED
    assert (await status_of(stub, run_id)) == enums_pb2.RUN_STATUS_CANCELED
    assert lines(log) == []


async def test_cancel_of_a_running_run_stores_the_reason(stub: Stub, log: Path) -> None:
    """The reason given to CancelRun of a RUNNING run is the message of the run's error, as
    it is for a suspended run."""
    run_id = await start_slow_in_background(stub, log)
    await wait_until_step_runs(stub, run_id, "slow")

    canceled = await stub.CancelRun(
        rr.CancelRunRequest(run_id=run_id, reason="operator stop"), timeout=4
    )

    assert canceled.status == enums_pb2.RUN_STATUS_CANCELED
    assert canceled.result.error.reason == "CANCELED"
    assert canceled.result.error.message == "operator stop"
    run = await stub.GetRun(rr.GetRunRequest(run_id=run_id))
    assert run.result.error.message == "operator stop"


async def test_cancel_right_after_an_immediate_start_leaves_no_step_running(
    stub: Stub, log: Path
) -> None:
    """CancelRun sent at once after a return_immediately start (the run is still setting up
    its first step) makes the run CANCELED with no step left RUNNING in it."""
    run_id = await start_slow_in_background(stub, log)

    canceled = await stub.CancelRun(rr.CancelRunRequest(run_id=run_id), timeout=4)

    assert canceled.status == enums_pb2.RUN_STATUS_CANCELED
    run = await stub.GetRun(rr.GetRunRequest(run_id=run_id))
    left_running = [
        key
        for key, result in run.result.steps.items()
        if result.status == enums_pb2.STEP_STATUS_RUNNING
    ]
    assert left_running == []
    assert lines(log) == []


# -- failures, deadlines, limits ------------------------------------------------------------


async def test_a_step_that_always_raises_fails_the_run_after_its_retries(stub: Stub) -> None:
    """A step that raises on every attempt (retries=2) makes the run FAILED with the last
    error's message, and its step result shows attempt 2."""
    result = await stub.StartRun(rr.StartRunRequest(workflow_id="fails"))

    assert result.status == enums_pb2.RUN_STATUS_FAILED
    assert result.error.message == "boom on attempt 2"
    assert result.error.reason == "STEP_FAILED"
    assert result.error.type == "ValueError"
    assert list(result.error.step.segments) == ["explode"]
    step = result.steps["explode"]
    assert step.status == enums_pb2.STEP_STATUS_FAILED
    assert step.attempt == 2
    assert step.error.message == "boom on attempt 2"
    assert (await status_of(stub, result.run_id)) == enums_pb2.RUN_STATUS_FAILED


@pytest.mark.parametrize(
    ("how", "kind", "message"),
    [
        ("exit", "SystemExit", "2"),
        ("interrupt", "KeyboardInterrupt", "KeyboardInterrupt"),
        ("unprintable", "_Unprintable", "_Unprintable"),
    ],
)
async def test_a_step_that_exits_or_cannot_say_why_fails_its_run_and_the_server_serves_on(
    db_path: Path, how: str, kind: str, message: str
) -> None:
    """A step that calls sys.exit() (argparse on bad arguments), raises KeyboardInterrupt,
    or raises an exception whose str() raises, fails its run STEP_FAILED naming the step
    and the type, as any step failure does. An outside audit found the first two stopped
    the server's event loop (every call after timed out), and again at every restart, whose
    recovery ran the step once more; the third failed the run INTERNAL, naming no step.
    The server is restarted on the same store to show nothing is left to recover."""
    for restart in range(2):
        running = await create_server(settings_for(db_path), store=SqliteStore(str(db_path)))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = Stub(channel)
                if not restart:
                    await assert_quits(stub, how, kind, message)
                listed = await stub.ListRuns(rr.ListRunsRequest(), timeout=10)
                statuses = {r.workflow_id: r.status for r in listed.runs}
                assert statuses["quits"] == enums_pb2.RUN_STATUS_FAILED
                served = await stub.StartRun(rr.StartRunRequest(workflow_id="fails"), timeout=10)
                assert served.error.reason == "STEP_FAILED"
        finally:
            await running.stop(grace=1.0)


async def assert_quits(stub: Stub, how: str, kind: str, message: str) -> None:
    """`quits` fails STEP_FAILED naming its step and `kind`; `quits-in-condition` fails
    CONDITION_FAILED when its condition exits, and succeeds otherwise."""
    asked = value({"how": how})
    failed = await stub.StartRun(rr.StartRunRequest(workflow_id="quits", input_data=asked))
    assert failed.status == enums_pb2.RUN_STATUS_FAILED
    error = failed.error
    assert (error.reason, error.type, error.message) == ("STEP_FAILED", kind, message)
    assert list(error.step.segments) == ["quit"]
    assert failed.steps["quit"].status == enums_pb2.STEP_STATUS_FAILED
    branch = rr.StartRunRequest(workflow_id="quits-in-condition", input_data=asked)
    judged = await stub.StartRun(branch, timeout=10)
    assert judged.error.reason == ("CONDITION_FAILED" if how == "exit" else "")


async def test_a_resume_whose_deadline_expires_still_finishes_the_run(
    stub: Stub, log: Path
) -> None:
    """A ResumeRun whose deadline expires while the resumed step runs fails DEADLINE_EXCEEDED
    for the caller, but the resume was accepted: the run finishes SUCCESS and each step ran
    exactly once."""
    started = await stub.StartRun(
        rr.StartRunRequest(workflow_id="counted", input_data=logged(log, 1.5))
    )
    assert started.status == enums_pb2.RUN_STATUS_SUSPENDED

    error = await call_error(
        stub.ResumeRun(
            rr.ResumeRequest(run_id=started.run_id, resume_data=value({"value": 1})),
            timeout=0.3,
        )
    )
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED

    async def settled() -> bool:
        return (await status_of(stub, started.run_id)) == enums_pb2.RUN_STATUS_SUCCESS

    await assert_eventually(settled)
    run = await stub.GetRun(rr.GetRunRequest(run_id=started.run_id))
    assert to_json(run.result.result) == {"value": 2}
    assert sorted(lines(log)) == ["gate", "one", "two"]


async def test_a_retry_after_an_expired_deadline_returns_how_the_run_ended(
    stub: Stub, log: Path
) -> None:
    """After a ResumeRun with a request_id fails DEADLINE_EXCEEDED, a retry with the same
    request_id does not resume again: it waits for and returns the accepted resume's outcome,
    and the gate ran once."""
    started = await stub.StartRun(
        rr.StartRunRequest(workflow_id="counted", input_data=logged(log, 0.8))
    )
    request = rr.ResumeRequest(
        run_id=started.run_id, resume_data=value({"value": 5}), request_id="resume-once"
    )
    error = await call_error(stub.ResumeRun(request, timeout=0.2))
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED

    retried = await stub.ResumeRun(request, timeout=10)

    assert retried.status == enums_pb2.RUN_STATUS_SUCCESS
    assert to_json(retried.result) == {"value": 6}
    assert sorted(lines(log)) == ["gate", "one", "two"]
    again = await stub.ResumeRun(request, timeout=10)
    assert (again.status, again.version) == (retried.status, retried.version)


@pytest.fixture
async def small_server(db_path: Path) -> AsyncIterator[RunningServer]:
    running = await create_server(settings_for(db_path, max_message_bytes=64 * 1024))
    try:
        yield running
    finally:
        await running.stop(grace=1.0)


async def test_an_answer_over_the_size_limit_is_refused_with_details_and_no_traceback(
    small_server: RunningServer, log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run whose result is larger than the server may send (64 KiB here) is answered
    RESOURCE_EXHAUSTED RESPONSE_TOO_LARGE naming the run and the sizes, on StartRun, GetRun
    and WatchRun alike, rather than failed by grpc with no details and a traceback; the run
    is stored and the server goes on serving."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_server.port}") as channel:
        stub = Stub(channel)
        request = rr.StartRunRequest(workflow_id="inflate", input_data=value({"bytes": 100_000}))
        started = await call_error(stub.StartRun(request))
        assert started.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert started.reason == "RESPONSE_TOO_LARGE"
        assert started.metadata["limit"] == str(64 * 1024)
        assert int(started.metadata["size"]) > 100_000
        run_id = started.metadata["run_id"]
        listed = await stub.ListRuns(rr.ListRunsRequest(workflow_id="inflate"))
        assert [(r.run_id, r.status) for r in listed.runs] == [
            (run_id, enums_pb2.RUN_STATUS_SUCCESS)
        ]
        assert "took effect" in started.message
        read = await call_error(stub.GetRun(rr.GetRunRequest(run_id=run_id)))
        assert (read.reason, read.metadata["run_id"]) == ("RESPONSE_TOO_LARGE", run_id)
        assert "took effect" not in read.message and "changes nothing" in read.message
        # A watch names the event it cannot send: a client skips it and goes on to the end.
        after, skipped, sent = 0, [], []
        while True:
            watch = stub.WatchRun(rr.WatchRunRequest(run_id=run_id, after_sequence=after))
            try:
                async for event in watch:
                    sent.append(event.sequence)
                break
            except grpc.aio.AioRpcError as exc:
                watched = rich_error(exc)
            assert watched.reason == "RESPONSE_TOO_LARGE", watched
            after = int(watched.metadata["sequence"])
            assert f"after_sequence {after}" in watched.message
            skipped.append(after)
        assert skipped and sorted(sent + skipped) == list(range(1, max(sent + skipped) + 1))
        small = await stub.StartRun(rr.StartRunRequest(workflow_id="slow", input_data=logged(log)))
        assert small.status == enums_pb2.RUN_STATUS_SUCCESS
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def _all(call: Any) -> list[Any]:
    return [message async for message in call]


async def test_payloads_that_together_exceed_their_share_of_the_limit_are_refused(
    small_server: RunningServer,
) -> None:
    """Each payload under an eighth of the message limit, but input and state together
    over it: refused INVALID_ARGUMENT naming both, before a run exists (the answer repeats
    them, and would not fit)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_server.port}") as channel:
        stub = Stub(channel)
        share = 64 * 1024 // 8
        request = rr.StartRunRequest(
            workflow_id="remember",
            run_id="together",
            input_data=value({"a": "x" * (share * 2 // 3)}),
            initial_state=value({"b": "y" * (share * 2 // 3)}).struct_value,
        )
        error = await call_error(stub.StartRun(request))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert sorted(error.violations) == ["initial_state", "input_data"]
        assert "together" in error.violations["input_data"]
        missing = await call_error(stub.GetRun(rr.GetRunRequest(run_id="together")))
        assert missing.code == grpc.StatusCode.NOT_FOUND


PAYLOAD_LIMIT = 4 * 1024 * 1024 // 8
"""The largest payload a request may carry on a server of the default --max-message-bytes
(4 MiB): an eighth of it, 524,288 bytes, measured as the field's encoded protobuf size."""


def sized(size: int, build: Any = struct) -> Any:
    """A {"pad": "x..."} payload, built by `build` (`struct` or `value`), whose encoded size
    (what the server measures: the field's ByteSize) is exactly `size` bytes."""
    pad = size
    while (got := build({"pad": "x" * pad}).ByteSize()) != size:
        pad -= got - size
    return build({"pad": "x" * pad})


async def test_a_payload_of_exactly_the_limit_is_taken_and_one_byte_more_is_refused(
    stub: Stub,
) -> None:
    """A payload may be as large as the limit (an eighth of --max-message-bytes, 524,288
    bytes by default, as encoded): input of exactly that starts the run; one byte more is
    INVALID_ARGUMENT naming the field and the limit, and no run exists."""
    at_limit = rr.StartRunRequest(
        workflow_id="remember", run_id="at-limit", input_data=sized(PAYLOAD_LIMIT, value)
    )
    started = await stub.StartRun(at_limit)
    assert (started.run_id, started.status) == ("at-limit", SUSPENDED)
    over = rr.StartRunRequest(
        workflow_id="remember", run_id="over-limit", input_data=sized(PAYLOAD_LIMIT + 1, value)
    )
    error = await call_error(stub.StartRun(over))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violations == {"input_data": f"larger than {PAYLOAD_LIMIT} bytes"}
    missing = await call_error(stub.GetRun(rr.GetRunRequest(run_id="over-limit")))
    assert missing.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("rpc", "field"),
    [
        ("ResumeRun", "request_context"),
        ("TimeTravelRun", "initial_state"),
        ("TimeTravelRun", "request_context"),
    ],
    ids=["resume-request-context", "time-travel-initial-state", "time-travel-request-context"],
)
async def test_every_payload_of_a_resume_or_time_travel_counts_against_the_limit(
    stub: Stub, rpc: str, field: str
) -> None:
    """Request context and initial state are payloads as input and resume data are (README:
    input, state, context, resume data): one byte over the limit on ResumeRun or
    TimeTravelRun is INVALID_ARGUMENT naming the field, and the run is left as it was."""
    started = await stub.StartRun(rr.StartRunRequest(workflow_id="remember", run_id="held"))
    assert started.status == SUSPENDED
    over = {field: sized(PAYLOAD_LIMIT + 1)}
    request = (
        rr.ResumeRequest(run_id="held", resume_data=value({"ok": True}), **over)
        if rpc == "ResumeRun"
        else rr.TimeTravelRunRequest(run_id="held", step=path("remember"), **over)
    )
    error = await call_error(getattr(stub, rpc)(request))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violations == {field: f"larger than {PAYLOAD_LIMIT} bytes"}
    run = await stub.GetRun(rr.GetRunRequest(run_id="held"))
    assert (run.status, run.result.version) == (SUSPENDED, started.version)


def _objects(levels: int) -> Any:
    data: Any = "leaf"
    for _ in range(levels):
        data = {"d": data}
    return data


async def test_payloads_nest_at_most_as_deep_as_every_answer_can_carry(
    stub: Stub, tmp_path: Path
) -> None:
    """Protobuf decoders stop at 100 message levels, and an answer holds a payload a few
    levels deeper than the request did: input nested 31 objects deep is served and every
    answer that repeats it reads back in Python; 32 is refused INVALID_ARGUMENT naming the
    field, before a run exists. A step whose output nests deeper fails INVALID_STEP_OUTPUT."""
    deepest = rr.StartRunRequest(workflow_id="remember", input_data=value(_objects(31)))
    started = await stub.StartRun(deepest)
    assert started.status == enums_pb2.RUN_STATUS_SUSPENDED
    read = await stub.GetRun(rr.GetRunRequest(run_id=started.run_id))
    assert to_json(read.result.steps["remember"].payload) == _objects(31)
    watch = stub.WatchRun(rr.WatchRunRequest(run_id=started.run_id))
    async for event in watch:
        if event.type == enums_pb2.RUN_EVENT_TYPE_RUN_SETTLED:
            assert to_json(event.result.steps["remember"].payload) == _objects(31)
            break
    watch.cancel()
    too_deep = rr.StartRunRequest(
        workflow_id="remember", run_id="too-deep", input_data=value(_objects(32))
    )
    error = await call_error(stub.StartRun(too_deep))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "nested deeper than 31" in error.violations["input_data"]
    missing = await call_error(stub.GetRun(rr.GetRunRequest(run_id="too-deep")))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    failed = await stub.StartRun(
        rr.StartRunRequest(workflow_id="deep-output", input_data=value({"levels": 40}))
    )
    assert failed.status == enums_pb2.RUN_STATUS_FAILED
    assert failed.error.reason == "INVALID_STEP_OUTPUT"
    assert "nested deeper than 31" in failed.error.message


@dataclass
class Faulty:
    store: FaultyStore
    stub: Stub


@pytest.fixture
async def faulty(db_path: Path) -> AsyncIterator[Faulty]:
    """A server whose store fails the commit that starts `counted`'s gate step."""
    store = FaultyStore(SqliteStore(str(db_path)))
    running = await create_server(settings_for(db_path), store=store)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            store.fail_writes(when=touches_step("gate", StepStatus.RUNNING))
            yield Faulty(store, Stub(channel))
    finally:
        await running.stop(grace=1.0)


async def test_a_store_failure_after_the_run_was_created_names_the_run(
    faulty: Faulty, log: Path
) -> None:
    """The database fails a commit of a run the call had already created: the answer is
    UNAVAILABLE STORE_UNAVAILABLE with the run's id in its metadata (the run exists, and a
    client that took "nothing was written" at its word would start a second one)."""
    request = rr.StartRunRequest(workflow_id="counted", run_id="half", input_data=logged(log))
    error = await call_error(faulty.stub.StartRun(request))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE")
    assert error.metadata["run_id"] == "half"
    faulty.store.clear()
    exists = await faulty.stub.GetRun(rr.GetRunRequest(run_id="half"))
    assert exists.run_id == "half"


async def test_a_retry_after_a_store_failure_continues_the_run_and_answers_its_outcome(
    faulty: Faulty, log: Path
) -> None:
    """The database fails a commit mid-run (the call is answered STORE_UNAVAILABLE; the run
    stays RUNNING with this server's lease); once it works, a retry with the same request id
    continues the run at once and answers its outcome, each step having run once. It
    answered RUNNING after a 2 s grace, and the run went on only when its lease expired."""
    request = rr.StartRunRequest(
        workflow_id="counted", run_id="retried", request_id="r-1", input_data=logged(log)
    )
    failed = await call_error(faulty.stub.StartRun(request))
    assert failed.reason == "STORE_UNAVAILABLE"
    faulty.store.clear()
    again = await faulty.stub.StartRun(request, timeout=5)  # the lease lasts 15 s
    assert (again.run_id, again.status) == ("retried", enums_pb2.RUN_STATUS_SUSPENDED)
    assert lines(log) == ["one"]  # not run again: its end was saved on its own


async def test_a_run_stalled_longer_than_its_lease_goes_on_once_the_store_takes_writes(
    db_path: Path, log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database takes no write for three leases while a run's step ends (reads work,
    as on a full disk). The step's end is not saved; the run is continued once a write of
    its own succeeds, under the lease that write renews, and the step runs once more.
    Before, every lease upkeep round ran the step again while writes failed; and once they
    worked, this replica took its own run over (its lease had expired), which stopped the
    continuation it had just started ("changed by another replica"), and the run waited
    a lease more."""
    store = FaultyStore(SqliteStore(str(db_path)))
    running = await create_server(settings_for(db_path, lease_seconds=0.6), store=store)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = Stub(channel)
            store.fail_writes(-1, when=lambda op: not is_create(op))  # all but the start
            data = value({"log": str(log), "seconds": 0.05})
            request = rr.StartRunRequest(workflow_id="slow", run_id="stalled", input_data=data)
            failed = await call_error(stub.StartRun(request))
            assert failed.reason == "STORE_UNAVAILABLE"
            await asyncio.sleep(1.8)  # three leases
            assert lines(log) == ["slow"]
            store.clear()
            cleared = time.monotonic()

            async def succeeded() -> bool:
                run = await stub.GetRun(rr.GetRunRequest(run_id="stalled"))
                return run.status == enums_pb2.RUN_STATUS_SUCCESS

            await assert_eventually(succeeded, timeout=5)
            assert time.monotonic() - cleared < 0.6  # a round of the upkeep, not a lease
            assert lines(log) == ["slow", "slow"]
            assert "changed by another replica" not in caplog.text
    finally:
        await running.stop(grace=1.0)


@pytest.mark.parametrize("call", ["ResumeRun", "TimeTravelRun"])
async def test_one_request_sent_twice_at_once_answers_both_copies_its_outcome(
    db_path: Path, log: Path, call: str
) -> None:
    """The same call (request id and arguments) sent twice at once, as a hedged request or
    a retry racing its first try is: one copy read the request id before the other took
    the run, and looked at the run after, finding the other's execution at work. It was
    refused (RESUME_CONFLICT, which tells its caller someone else resumed; RUN_ACTIVE)
    where it should get the first's outcome. An outside audit found it on PostgreSQL,
    whose reads lag so; here the copy's read of the request id is answered late."""
    store = FaultyStore(SqliteStore(str(db_path)))
    running = await create_server(settings_for(db_path), store=store)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = Stub(channel)
            slowly = logged(log, seconds=1.0)  # the gate's resumed run, and the slow step
            counted = rr.StartRunRequest(workflow_id="counted", input_data=slowly)
            started = await stub.StartRun(counted)
            if call == "ResumeRun":
                request: Any = rr.ResumeRequest(
                    run_id=started.run_id, resume_data=value({"value": 1}), request_id="twice"
                )
                expected = ["one", "gate", "two"]
            else:
                slow = rr.StartRunRequest(workflow_id="slow", input_data=logged(log))
                done = await stub.StartRun(slow)
                request = rr.TimeTravelRunRequest(
                    run_id=done.run_id, step=path("slow"), input_data=slowly, request_id="twice"
                )
                expected = ["one", "slow", "slow"]
            send = getattr(stub, call)
            store.delay_request_reads(0.3)
            copy = asyncio.ensure_future(send(request))

            async def copy_has_read() -> bool:
                return not store.slow_request_reads

            await assert_eventually(copy_has_read)
            first = await send(request)
            again = await copy

            assert (again.status, again.version) == (first.status, first.version)
            assert first.status == enums_pb2.RUN_STATUS_SUCCESS
            assert lines(log) == expected
    finally:
        await running.stop(grace=1.0)


async def test_a_message_over_the_size_limit_is_refused_and_the_server_keeps_serving(
    small_server: RunningServer, log: Path
) -> None:
    """With max_message_bytes of 64 KiB, a StartRun carrying 200 KB of input is refused
    RESOURCE_EXHAUSTED without creating a run, and the server goes on answering calls."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_server.port}") as channel:
        stub = Stub(channel)
        big = value({"log": str(log), "padding": "x" * 200_000})

        error = await call_error(
            stub.StartRun(rr.StartRunRequest(workflow_id="slow", run_id="big", input_data=big))
        )

        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        missing = await call_error(stub.GetRun(rr.GetRunRequest(run_id="big")))
        assert missing.code == grpc.StatusCode.NOT_FOUND
        small = await stub.StartRun(rr.StartRunRequest(workflow_id="slow", input_data=logged(log)))
        assert small.status == enums_pb2.RUN_STATUS_SUCCESS
        assert lines(log) == ["slow"]


async def test_a_resume_that_arrives_while_the_winner_is_still_being_answered_is_a_conflict(
    db_path: Path,
) -> None:
    """The winning resume's continuation has committed the run's next suspension, but its
    fsync has not returned, so its caller has no answer yet. A second resume of the
    suspension they both saw (step omitted) that arrives then is ABORTED RESUME_CONFLICT
    (DESIGN.md §4: of concurrent resumes of one suspension exactly one wins), and the next
    suspension stays waiting. Before, the second resume read the committed state and
    resumed the second stage with the data its caller meant for the first."""
    store = FaultyStore(SqliteStore(str(db_path)))
    running = await create_server(settings_for(db_path, workflows=FLOW_WORKFLOWS), store=store)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = Stub(channel)
            started = await stub.StartRun(rr.StartRunRequest(workflow_id="two-stages"))
            assert paths(started) == [["first"]]
            store.delay_answers(1.0, count=1, when=settles(RunStatus.SUSPENDED))

            def resume_first(ok: bool) -> Any:
                request = rr.ResumeRequest(run_id=started.run_id, resume_data=value({"ok": ok}))
                return stub.ResumeRun(request)

            winner = asyncio.ensure_future(resume_first(True))

            async def second_stage_waits() -> bool:
                run = await stub.GetRun(rr.GetRunRequest(run_id=started.run_id))
                return paths(run.result) == [["second"]]

            await assert_eventually(second_stage_waits)
            assert not winner.done()

            error = await call_error(resume_first(False))

            assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "RESUME_CONFLICT")
            done = await winner
            assert done.status == enums_pb2.RUN_STATUS_SUSPENDED
            assert paths(done) == [["second"]]
            run = await stub.GetRun(rr.GetRunRequest(run_id=started.run_id))
            assert paths(run.result) == [["second"]]
            assert run.result.steps["second"].status == enums_pb2.STEP_STATUS_SUSPENDED
            assert to_json(run.result.steps["first"].output) == {"step": "first", "ok": True}
    finally:
        await running.stop(grace=1.0)


HUGE = "1" + "0" * 400
"""Digits pydantic turns into an int past a double's range: no answer could carry it."""


async def test_input_that_pydantic_takes_but_no_answer_can_carry_is_invalid_argument(
    stub: Stub,
) -> None:
    """pydantic makes an int of 401 digits; stored, every answer about the run failed
    INTERNAL for good (the number does not fit a double). Refused with the field named,
    and no run is left behind."""
    request = rr.StartRunRequest(
        workflow_id="uncarried", run_id="huge-input", input_data=value({"n": HUGE})
    )
    error = await call_error(stub.StartRun(request))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")
    assert "double's range" in error.violations["input_data.n"]
    missing = await call_error(stub.GetRun(rr.GetRunRequest(run_id="huge-input")))
    assert missing.code == grpc.StatusCode.NOT_FOUND


async def test_resume_data_that_no_answer_can_carry_is_refused_and_the_run_stays_suspended(
    stub: Stub,
) -> None:
    started = await stub.StartRun(rr.StartRunRequest(workflow_id="uncarried", input_data=value({})))
    assert started.status == enums_pb2.RUN_STATUS_SUSPENDED
    refused = rr.ResumeRequest(run_id=started.run_id, resume_data=value({"n": HUGE}))
    error = await call_error(stub.ResumeRun(refused))
    assert (error.code, error.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_RESUME_DATA",
    )
    assert "double's range" in error.violations["resume_data.n"]
    run = await stub.GetRun(rr.GetRunRequest(run_id=started.run_id))
    assert run.status == enums_pb2.RUN_STATUS_SUSPENDED
    done = await stub.ResumeRun(
        rr.ResumeRequest(run_id=started.run_id, resume_data=value({"n": 5}))
    )
    assert to_json(done.result) == {"n": 5}


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        ("bigint", "double's range"),
        ("negative-bigint", "double's range"),
        ("surrogate", "UTF-8"),
    ],
)
async def test_a_step_output_no_answer_can_carry_fails_the_step_and_the_run_stays_readable(
    stub: Stub, make: str, problem: str
) -> None:
    result = await stub.StartRun(
        rr.StartRunRequest(workflow_id="uncarried", input_data=value({"make": make}))
    )
    assert result.status == enums_pb2.RUN_STATUS_FAILED
    assert result.error.reason == "INVALID_STEP_OUTPUT"
    assert problem in result.error.message
    run = await stub.GetRun(rr.GetRunRequest(run_id=result.run_id))
    assert run.status == enums_pb2.RUN_STATUS_FAILED
    events = [event async for event in stub.WatchRun(rr.WatchRunRequest(run_id=result.run_id))]
    assert events[-1].type == enums_pb2.RUN_EVENT_TYPE_RUN_SETTLED


async def test_models_with_aliases_and_computed_fields_round_trip_through_the_store(
    stub: Stub,
) -> None:
    """What a step returns or suspends with is stored as its model's JSON (by alias, with
    computed fields) and validated again when the next step reads it. Before, a computed
    field under extra="forbid" failed the run on a valid resume (INTERNAL, the step left
    RUNNING), a validation alias made the next step's input "missing", and a
    serialization-only alias or a state key given by field name silently lost the value."""
    order = {"orderId": "o-1", "city": "Warsaw", "quote": {"unit": 2, "qty": 3}}
    started = await stub.StartRun(
        rr.StartRunRequest(workflow_id="aliased", input_data=value(order))
    )
    assert started.status == enums_pb2.RUN_STATUS_SUSPENDED, started.error
    receipt = {"orderId": "o-1", "cityName": "Warsaw", "quote": {"unit": 2, "qty": 3, "total": 6}}
    assert to_json(started.steps["receipt"].output) == receipt
    assert to_json(started.suspend_payload["confirm"]) == {"unit": 2, "qty": 3, "total": 6}

    done = await stub.ResumeRun(
        rr.ResumeRequest(
            run_id=started.run_id,
            resume_data=value({"zipCode": "00-950"}),
            output_options=message_pb2.OutputOptions(include_state=True),
        )
    )

    assert done.status == enums_pb2.RUN_STATUS_SUCCESS, done.error
    state = {"userName": "carol", "hits": 1}
    assert to_json(done.result) == {
        "order_id": "o-1",
        "city": "Warsaw",
        "zip": "00-950",
        "total": 6,
        "state": state,
    }
    assert to_json(done.state) == state


async def test_a_steps_published_output_schema_describes_what_it_answers(stub: Stub) -> None:
    """Output and suspend schemas are published as what the server sends (by alias, with
    computed fields); input and resume schemas as what it accepts."""
    workflow = await stub.GetWorkflow(rr.GetWorkflowRequest(workflow_id="aliased"))
    receipt, confirm = (json_format.MessageToDict(step) for step in workflow.steps)
    assert set(receipt["outputSchema"]["properties"]) == {"orderId", "cityName", "quote"}
    assert set(receipt["inputSchema"]["properties"]) == {"orderId", "city", "quote"}
    assert set(confirm["suspendSchema"]["properties"]) == {"unit", "qty", "total"}
    assert set(confirm["resumeSchema"]["properties"]) == {"zipCode"}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    a: int = 0


class _Holder(BaseModel):
    items: list[_Open] | None = None


def test_stored_json_keeps_the_extra_keys_a_model_allows() -> None:
    """Stored JSON is read back ignoring the keys a model does not know (its computed
    fields), except in a model that allows extra keys: there they are data."""
    stored = schema.dump(_Holder, {"items": [{"a": 1, "note": "kept"}]})
    assert stored == {"items": [{"a": 1, "note": "kept"}]}
    read = schema.parse(_Holder, stored)
    assert schema.dump(_Holder, read) == stored


async def test_a_strict_model_takes_what_json_can_carry(stub: Stub) -> None:
    """A strict model (ConfigDict(strict=True)) takes a datetime and a UUID as strings and
    a whole number as an int, as pydantic's JSON mode does: no client can send Python's
    objects, and every number arrives as a double. Before, no request could pass."""
    booking = {
        "when": "2024-01-01T10:00:00Z",
        "ident": "12345678-1234-5678-1234-567812345678",
        "nights": 2,
    }
    started = await stub.StartRun(
        rr.StartRunRequest(workflow_id="strict", input_data=value(booking))
    )
    assert started.status == enums_pb2.RUN_STATUS_SUSPENDED, started.error
    done = await stub.ResumeRun(
        rr.ResumeRequest(run_id=started.run_id, resume_data=value({**booking, "nights": 1}))
    )
    assert to_json(done.result) == {"weekday": 0, "nights": 3, "types": ["datetime", "UUID"]}
    wrong = rr.StartRunRequest(workflow_id="strict", input_data=value({**booking, "nights": 2.5}))
    error = await call_error(stub.StartRun(wrong))
    assert (error.code, list(error.violations)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input_data.nights"],
    )


async def test_violations_name_the_fields_the_client_sent_not_union_members(stub: Stub) -> None:
    """pydantic puts the union member it tried in an error's location (`pet.dog.barks`,
    `either.int`); a violation names the field as the client's data has it."""
    data = {"pet": {"kind": "dog", "barks": "loud"}, "either": [1], "lines": [{}, {"sku": 5}]}
    request = rr.StartRunRequest(workflow_id="pets", input_data=value(data))
    error = await call_error(stub.StartRun(request))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.violations) == {
        "input_data.pet.barks",
        "input_data.either",
        "input_data.lines.0.sku",
        "input_data.lines.1.sku",
    }


@pytest.mark.parametrize(
    ("odd", "said"),
    [
        ("nan", "at most a century"),
        ("inf", "at most a century"),
        ("huge", "at most a century"),
        ("label", "1-200 characters"),
    ],
)
async def test_a_suspend_the_run_could_not_keep_fails_the_step(
    stub: Stub, odd: str, said: str
) -> None:
    """A suspend timeout that is NaN, infinite or past what a Timestamp holds (the run was
    stored SUSPENDED and answered INTERNAL, then never readable), or a label no resume
    could name, fails the step like any error it raises; the run stays readable."""
    result = await stub.StartRun(
        rr.StartRunRequest(workflow_id="odd-suspend", input_data=value({"odd": odd}))
    )
    assert result.status == enums_pb2.RUN_STATUS_FAILED
    assert said in result.error.message
    run = await stub.GetRun(rr.GetRunRequest(run_id=result.run_id))
    assert run.status == enums_pb2.RUN_STATUS_FAILED


def test_a_step_may_return_a_strict_models_data_as_json() -> None:
    """A step's output or suspend payload given as a dict is validated as the requests
    are: a strict model takes a datetime and a UUID as strings there too."""
    data = {"when": "2024-01-01T10:00:00Z", "ident": "12345678-1234-5678-1234-567812345678"}
    assert schema.dump(Booking, {**data, "nights": 2}) == {**data, "nights": 2}
