"""End-to-end: the async and the sync client against a real server.

Run under `scripts/with_server.sh`, which serves `waystation.examples` and
`tests.support.workflows` and sets WAYSTATION_ADDRESS. `document-review` suspends twice in
its nested `review` workflow (legal-review, then editor-signoff) before it publishes; `slow`
sleeps `seconds`, then appends "slow" to the file named by `log`; `inflate` returns a string
of `bytes` characters.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from waystation_client import (
    AsyncWorkflowClient,
    DeadlineExceededError,
    InvalidResumeDataError,
    ResponseTooLargeError,
    Run,
    RunEventType,
    RunNotActiveError,
    RunNotFoundError,
    RunStatus,
    StepNotSuspendedError,
    VersionMismatchError,
    WorkflowClient,
    WorkflowNotFoundError,
    WorkflowResult,
    from_value,
    result_json,
)
from waystation_client.v1 import request_response_pb2 as rr

DOCUMENT = {"document_id": "d-1", "title": "T", "body": "a b"}
LEGAL = ["review", "legal-review"]
EDITOR = "review.editor-signoff"
APPROVAL = {"approved": True, "reviewer": "lee"}
SIGN_OFF = {"signed_off": True, "editor": "ed"}
BAD_APPROVAL = {"approved": "nope"}
SUSPENDED = RunStatus.RUN_STATUS_SUSPENDED
SUCCESS = RunStatus.RUN_STATUS_SUCCESS
# More than the server's default message limit (4 MiB), which with_server.sh keeps.
OVER_THE_LIMIT = 4 * 1024 * 1024 + 100_000


def new_traceparent() -> tuple[str, str]:
    """A sampled W3C traceparent and its trace id."""
    trace_id = secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01", trace_id


def suspended_paths(result: WorkflowResult) -> list[list[str]]:
    return [list(path.segments) for path in result.suspended]


def assert_waits_for_legal(result: WorkflowResult) -> None:
    assert result.status == SUSPENDED, result_json(result)
    assert suspended_paths(result) == [LEGAL]
    payload = from_value(result.suspend_payload["review.legal-review"])
    assert payload == {"document_id": "d-1", "title": "T", "reviewer_role": "legal"}


def assert_waits_for_editor(result: WorkflowResult) -> None:
    assert result.status == SUSPENDED, result_json(result)
    assert suspended_paths(result) == [EDITOR.split(".")]
    assert from_value(result.suspend_payload[EDITOR])["reviewer_role"] == "editor"


def assert_published(result: WorkflowResult) -> None:
    assert result.status == SUCCESS, result_json(result)
    assert from_value(result.result) == {
        "document_id": "d-1",
        "published": True,
        "reviewers": ["lee", "ed"],
    }
    assert result_json(result)["status"] == "RUN_STATUS_SUCCESS"


def assert_rejected_approval(error: InvalidResumeDataError, run_id: str) -> None:
    fields = [field for field, _ in error.field_violations]
    assert "resume_data.approved" in fields
    assert "resume_data.reviewer" in fields
    assert error.reason == "INVALID_RESUME_DATA"
    assert error.run_id == run_id
    assert error.step == LEGAL


async def wait_for_status(client: AsyncWorkflowClient, run_id: str, status: int) -> Run:
    """The run once it has `status`, or as it is after about 10 s."""
    for _ in range(200):
        run = await client.get_run(run_id)
        if run.status == status:
            break
        await asyncio.sleep(0.05)
    return run


def wait_for_status_sync(client: WorkflowClient, run_id: str, status: int) -> Run:
    """The run once it has `status`, or as it is after about 10 s."""
    for _ in range(200):
        run = client.get_run(run_id)
        if run.status == status:
            break
        time.sleep(0.05)
    return run


# grpc-stubs make the interceptor classes generic, which they are not at run time.
class RecordRequests(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Keeps every unary request that a sync channel sends, as it goes on the wire."""

    def __init__(self) -> None:
        self.requests: list[object] = []

    def intercept_unary_unary(
        self, continuation: Callable[[Any, object], Any], details: Any, request: object
    ) -> Any:
        self.requests.append(request)
        return continuation(details, request)


class RecordRequestsAio(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Keeps every unary request that an asyncio channel sends."""

    def __init__(self) -> None:
        self.requests: list[object] = []

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], details: Any, request: Any
    ) -> Any:
        self.requests.append(request)
        return await continuation(details, request)


def restarts(requests: list[object]) -> list[rr.RestartRunRequest]:
    return [request for request in requests if isinstance(request, rr.RestartRunRequest)]


# The async client


async def test_async_client_resumes_nested_steps_until_the_document_is_published(
    aclient: AsyncWorkflowClient,
) -> None:
    started = await aclient.start_run("document-review", input_data=DOCUMENT)
    assert_waits_for_legal(started)

    legal = await aclient.resume_run(started.run_id, step=LEGAL, resume_data=APPROVAL)
    assert_waits_for_editor(legal)
    assert legal.version > started.version

    done = await aclient.resume_run(started.run_id, step=EDITOR, resume_data=SIGN_OFF)
    assert_published(done)
    assert (await aclient.get_run(started.run_id)).status == SUCCESS


async def test_async_invalid_resume_data_raises_field_violations_and_run_stays_suspended(
    aclient: AsyncWorkflowClient,
) -> None:
    started = await aclient.start_run("document-review", input_data=DOCUMENT)

    with pytest.raises(InvalidResumeDataError) as caught:
        await aclient.resume_run(started.run_id, step=LEGAL, resume_data=BAD_APPROVAL)

    assert_rejected_approval(caught.value, started.run_id)
    run = await aclient.get_run(started.run_id)
    assert run.status == SUSPENDED
    assert_waits_for_legal(run.result)


async def test_async_traceparent_in_metadata_comes_back_as_the_trace_id(
    aclient: AsyncWorkflowClient,
) -> None:
    start_parent, start_trace = new_traceparent()
    started = await aclient.start_run(
        "document-review", input_data=DOCUMENT, metadata=[("traceparent", start_parent)]
    )
    assert started.trace_id == start_trace

    resume_parent, resume_trace = new_traceparent()
    resumed = await aclient.resume_run(
        started.run_id, step=LEGAL, resume_data=APPROVAL, traceparent=resume_parent
    )
    assert resumed.trace_id == resume_trace


async def test_async_expired_deadline_raises_deadline_exceeded_and_the_run_goes_on(
    aclient: AsyncWorkflowClient, tmp_path: Path
) -> None:
    log, run_id = tmp_path / "slow.log", f"slow-{uuid.uuid4()}"

    with pytest.raises(DeadlineExceededError):
        await aclient.start_run(
            "slow", run_id=run_id, input_data={"log": str(log), "seconds": 2}, timeout=0.3
        )

    assert (await wait_for_status(aclient, run_id, SUCCESS)).status == SUCCESS
    assert log.read_text().splitlines() == ["slow"]


async def test_async_errors_carry_the_reason_ids_and_suspended_steps(
    aclient: AsyncWorkflowClient,
) -> None:
    missing = f"missing-{uuid.uuid4()}"
    with pytest.raises(RunNotFoundError) as not_found:
        await aclient.get_run(missing)
    assert not_found.value.run_id == missing

    with pytest.raises(WorkflowNotFoundError) as no_workflow:
        await aclient.start_run("no-such-workflow")
    assert no_workflow.value.workflow_id == "no-such-workflow"

    started = await aclient.start_run("document-review", input_data=DOCUMENT)
    with pytest.raises(StepNotSuspendedError) as wrong_step:
        await aclient.resume_run(started.run_id, step=EDITOR, resume_data=SIGN_OFF)
    assert wrong_step.value.suspended == [LEGAL]
    assert wrong_step.value.step_path == EDITOR


async def test_async_watch_run_replays_events_and_resumes_after_a_sequence(
    aclient: AsyncWorkflowClient, tmp_path: Path
) -> None:
    done = await aclient.start_run("slow", input_data={"log": str(tmp_path / "log"), "seconds": 0})

    events = [event async for event in aclient.watch_run(done.run_id)]
    sequences = [event.sequence for event in events]
    assert sequences == sorted(sequences) and len(events) >= 3
    assert events[-1].type == RunEventType.RUN_EVENT_TYPE_RUN_SETTLED
    assert events[-1].result.status == SUCCESS

    rest = [e.sequence async for e in aclient.watch_run(done.run_id, after_sequence=sequences[0])]
    assert rest == sequences[1:]


async def test_async_runs_are_created_listed_canceled_and_deleted(
    aclient: AsyncWorkflowClient,
) -> None:
    workflows = await aclient.list_workflows()
    assert "document-review" in [w.workflow_id for w in workflows.workflows]
    definition = await aclient.get_workflow("document-review")
    assert [step.id for step in definition.steps] == ["prepare", "review", "publish"]

    run_id, resource_id = f"doc-{uuid.uuid4()}", f"tenant-{uuid.uuid4()}"
    created = await aclient.create_run("document-review", run_id=run_id, resource_id=resource_id)
    assert created.status == RunStatus.RUN_STATUS_PENDING
    pending = await aclient.list_runs(resource_id=resource_id, statuses=["PENDING"])
    assert [run.run_id for run in pending.runs] == [run_id]

    started = await aclient.start_run("document-review", run_id=run_id, input_data=DOCUMENT)
    assert_waits_for_legal(started)
    canceled = await aclient.cancel_run(run_id, reason="test")
    assert canceled.status == RunStatus.RUN_STATUS_CANCELED

    await aclient.delete_run(run_id)
    with pytest.raises(RunNotFoundError):
        await aclient.get_run(run_id)


async def test_async_restart_run_sends_force_and_a_finished_run_is_still_not_active(
    address: str, tmp_path: Path
) -> None:
    recorder = RecordRequestsAio()
    interceptors: Any = [recorder]  # grpc-stubs leave their interceptor type to a cast
    async with (
        grpc.aio.insecure_channel(address, interceptors=interceptors) as channel,
        AsyncWorkflowClient(channel) as aclient,
    ):
        done = await aclient.start_run("slow", input_data={"log": str(tmp_path / "log")})
        # `force` takes over another replica's lease; it does not revive a finished run.
        for force in (True, False):
            with pytest.raises(RunNotActiveError) as refused:
                await aclient.restart_run(done.run_id, force=force)
            assert (refused.value.run_id, refused.value.run_status) == (done.run_id, "success")
    assert [request.force for request in restarts(recorder.requests)] == [True, False]


async def test_async_an_answer_over_the_message_limit_is_response_too_large(
    aclient: AsyncWorkflowClient,
) -> None:
    with pytest.raises(ResponseTooLargeError) as caught:
        await aclient.start_run("inflate", input_data={"bytes": OVER_THE_LIMIT})
    error = caught.value
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RESPONSE_TOO_LARGE")
    assert error.limit is not None and error.size is not None and error.size > error.limit
    # The run took effect: it is stored and listed (a listing carries no result).
    assert error.run_id
    runs = await aclient.list_runs(workflow_id="inflate")
    assert error.run_id in [run.run_id for run in runs.runs]


# The sync client


def test_sync_client_resumes_nested_steps_until_the_document_is_published(
    client: WorkflowClient,
) -> None:
    started = client.start_run("document-review", input_data=DOCUMENT)
    assert_waits_for_legal(started)

    legal = client.resume_run(started.run_id, step="review.legal-review", resume_data=APPROVAL)
    assert_waits_for_editor(legal)

    done = client.resume_run(started.run_id, step=EDITOR.split("."), resume_data=SIGN_OFF)
    assert_published(done)


def test_sync_invalid_resume_data_raises_field_violations_and_run_stays_suspended(
    client: WorkflowClient,
) -> None:
    started = client.start_run("document-review", input_data=DOCUMENT)

    with pytest.raises(InvalidResumeDataError) as caught:
        client.resume_run(started.run_id, step=LEGAL, resume_data=BAD_APPROVAL)

    assert_rejected_approval(caught.value, started.run_id)
    assert client.get_run(started.run_id).status == SUSPENDED


def test_sync_traceparent_keyword_comes_back_as_the_trace_id(client: WorkflowClient) -> None:
    traceparent, trace_id = new_traceparent()
    started = client.start_run("document-review", input_data=DOCUMENT, traceparent=traceparent)
    assert started.trace_id == trace_id

    traceparent, trace_id = new_traceparent()
    resumed = client.resume_run(
        started.run_id, step=LEGAL, resume_data=APPROVAL, metadata={"traceparent": traceparent}
    )
    assert resumed.trace_id == trace_id


def test_sync_resume_with_expected_version_zero_of_a_run_at_another_version_is_refused(
    client: WorkflowClient,
) -> None:
    """0 is a version to compare with, not "no guard": the resume is refused, not applied."""
    started = client.start_run("document-review", input_data=DOCUMENT)
    assert started.version > 0

    with pytest.raises(VersionMismatchError) as caught:
        client.resume_run(started.run_id, step=LEGAL, resume_data=APPROVAL, expected_version=0)

    error = caught.value
    assert (error.expected_version, error.actual_version) == (0, started.version)
    assert_waits_for_legal(client.get_run(started.run_id).result)


def test_sync_include_resume_labels_alone_answers_the_resume_labels(
    client: WorkflowClient,
) -> None:
    """include_resume_labels needs no include_state; without it the answer has no labels."""
    started = client.start_run("document-review", input_data=DOCUMENT, include_resume_labels=True)
    assert_waits_for_legal(started)
    assert {label: list(at.step.segments) for label, at in started.resume_labels.items()} == {
        "legal": LEGAL
    }

    plain = client.start_run("document-review", input_data=DOCUMENT)
    assert not plain.resume_labels


def test_sync_an_empty_step_text_resumes_the_one_suspended_step(client: WorkflowClient) -> None:
    """`step=""` sends no path (not the path [""]), so the server resumes the only suspended
    step, as it does for `step=None`."""
    started = client.start_run("document-review", input_data=DOCUMENT)
    assert_waits_for_legal(started)

    legal = client.resume_run(started.run_id, step="", resume_data=APPROVAL)
    assert_waits_for_editor(legal)

    done = client.resume_run(started.run_id, step=None, resume_data=SIGN_OFF)
    assert_published(done)


def test_sync_expired_deadline_raises_deadline_exceeded_and_the_run_goes_on(
    client: WorkflowClient, tmp_path: Path
) -> None:
    log, run_id = tmp_path / "slow.log", f"slow-{uuid.uuid4()}"

    with pytest.raises(DeadlineExceededError):
        client.start_run(
            "slow", run_id=run_id, input_data={"log": str(log), "seconds": 2}, timeout=0.3
        )

    assert wait_for_status_sync(client, run_id, SUCCESS).status == SUCCESS
    assert log.read_text().splitlines() == ["slow"]


def test_sync_watch_run_ends_with_the_settled_result(
    client: WorkflowClient, tmp_path: Path
) -> None:
    done = client.start_run("slow", input_data={"log": str(tmp_path / "log"), "seconds": 0})

    events = list(client.watch_run(done.run_id))

    assert events[-1].type == RunEventType.RUN_EVENT_TYPE_RUN_SETTLED
    assert events[-1].result.status == SUCCESS


def test_sync_restart_run_sends_force_and_a_finished_run_is_still_not_active(
    address: str, tmp_path: Path
) -> None:
    recorder = RecordRequests()
    channel = grpc.intercept_channel(grpc.insecure_channel(address), recorder)
    with channel, WorkflowClient(channel) as forced:
        done = forced.start_run("slow", input_data={"log": str(tmp_path / "log")})
        with pytest.raises(RunNotActiveError) as refused:
            forced.restart_run(done.run_id, force=True, request_id=f"restart-{uuid.uuid4()}")
    assert (refused.value.run_id, refused.value.run_status) == (done.run_id, "success")
    [sent] = restarts(recorder.requests)
    assert (sent.run_id, sent.force) == (done.run_id, True)
