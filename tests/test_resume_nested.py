"""Resume rules of DESIGN.md §4 for nested workflows, through a real server.

A suspended leaf inside a nested workflow is reported by its full path; it resumes by that
path, by its wrapper alone, with the step omitted, or by its label. Where Mastra fails the
whole run on a bad nested resume, Waystation refuses the call and the run stays suspended,
unchanged and resumable.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.api import path, paths, to_json, value
from tests.support.refusals import assert_error, observe, refused, resume
from tests.support.workflows import lines
from waystation.api.v1 import enums_pb2, message_pb2
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub

DOMAIN = "waystation.dev"
SUSPENDED = enums_pb2.RUN_STATUS_SUSPENDED
SUCCESS = enums_pb2.RUN_STATUS_SUCCESS
STEP = enums_pb2.StepStatus
DOCUMENT = {"document_id": "d-1", "title": "Terms", "body": "one two three"}


# -- helpers ------------------------------------------------------------------------------


def new_run_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def start_nested(
    stub: WorkflowServiceStub, tmp_path: Path
) -> tuple[message_pb2.WorkflowResult, Path]:
    """Start `nested-counted` (first -> inner[a, b] -> last); it suspends at inner.a."""
    log = tmp_path / f"{uuid.uuid4().hex}.log"
    result = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="nested-counted",
            run_id=new_run_id("nested"),
            input_data=value({"log": str(log)}),
        )
    )
    assert result.status == SUSPENDED
    return result, log


async def start_at_b(
    stub: WorkflowServiceStub, tmp_path: Path
) -> tuple[message_pb2.WorkflowResult, Path]:
    """A `nested-counted` run whose inner.a is done and which now waits at inner.b."""
    started, log = await start_nested(stub, tmp_path)
    at_b = await stub.ResumeRun(resume(started.run_id, {"ok": True}, step=path("inner", "a")))
    assert paths(at_b) == [["inner", "b"]]
    return at_b, log


async def start_review(stub: WorkflowServiceStub) -> message_pb2.WorkflowResult:
    """Start `document-review`; it suspends at review.legal-review."""
    result = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="document-review",
            run_id=new_run_id("review"),
            input_data=value(DOCUMENT),
        )
    )
    assert result.status == SUSPENDED
    return result


def payloads(result: message_pb2.WorkflowResult) -> dict[str, Any]:
    return {key: to_json(payload) for key, payload in result.suspend_payload.items()}


def step_statuses(result: message_pb2.WorkflowResult) -> dict[str, int]:
    return {key: step.status for key, step in result.steps.items()}


async def assert_nested_resumable(stub: WorkflowServiceStub, run_id: str, log: Path) -> None:
    """The run can still be driven to the end, and every step ran exactly once."""
    run = await stub.GetRun(rr.GetRunRequest(run_id=run_id))
    if paths(run.result) == [["inner", "a"]]:
        await stub.ResumeRun(resume(run_id, {"ok": True}, step=path("inner", "a")))
    done = await stub.ResumeRun(resume(run_id, {"n": 3}, step=path("inner", "b")))
    assert done.status == SUCCESS
    assert to_json(done.result) == {"n": 3, "done": True}
    assert lines(log) == ["one", "a", "b", "last"]


# -- reporting nested suspensions ---------------------------------------------------------


async def test_nested_suspension_is_reported_by_its_full_path(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A leaf suspended inside a nested workflow is listed as [wrapper, leaf], its payload
    keyed "wrapper.leaf", and the steps map has the wrapper and the leaf."""
    started, log = await start_nested(stub, tmp_path)

    assert paths(started) == [["inner", "a"]]
    assert payloads(started) == {"inner.a": {"step": "a"}}
    assert step_statuses(started) == {
        "first": STEP.STEP_STATUS_SUCCESS,
        "inner": STEP.STEP_STATUS_SUSPENDED,
        "inner.a": STEP.STEP_STATUS_SUSPENDED,
    }
    assert lines(log) == ["one"]


async def test_document_review_suspends_at_the_nested_legal_review(
    stub: WorkflowServiceStub,
) -> None:
    """The example's nested review reports review.legal-review with legal's request."""
    started = await start_review(stub)

    assert paths(started) == [["review", "legal-review"]]
    assert payloads(started) == {
        "review.legal-review": {"document_id": "d-1", "title": "Terms", "reviewer_role": "legal"}
    }
    assert started.steps["review"].status == STEP.STEP_STATUS_SUSPENDED


async def test_document_review_resumes_by_labels_through_both_reviews_to_publication(
    stub: WorkflowServiceStub,
) -> None:
    """Labels of nested steps resume them: "legal", then the second nested suspension
    review.editor-signoff by "editor"; then the document is published."""
    started = await start_review(stub)

    legal = await stub.ResumeRun(
        resume(started.run_id, {"approved": True, "reviewer": "lee"}, label="legal")
    )
    assert paths(legal) == [["review", "editor-signoff"]]
    assert payloads(legal)["review.editor-signoff"]["reviewer_role"] == "editor"
    done = await stub.ResumeRun(
        resume(started.run_id, {"signed_off": True, "editor": "ed"}, label="editor")
    )

    assert done.status == SUCCESS
    assert to_json(done.result) == {
        "document_id": "d-1",
        "published": True,
        "reviewers": ["lee", "ed"],
    }


# -- the forms of a nested resume ---------------------------------------------------------

FIRST_FORMS = {
    "full-path": {"step": path("inner", "a")},
    "wrapper-only": {"step": path("inner")},
    "omitted": {},
}
SECOND_FORMS = {
    "full-path": {"step": path("inner", "b")},
    "wrapper-only": {"step": path("inner")},
    "omitted": {},
    "label": {"label": "inner-b"},
}


@pytest.mark.parametrize("form", FIRST_FORMS.values(), ids=FIRST_FORMS.keys())
async def test_first_nested_suspension_resumes_by_path_wrapper_or_omitted_step(
    stub: WorkflowServiceStub, tmp_path: Path, form: dict[str, Any]
) -> None:
    """inner.a resumes by its full path, by the wrapper alone (one suspended leaf under
    it) or with the step omitted; then the run reports the second suspension inner.b."""
    started, log = await start_nested(stub, tmp_path)

    at_b = await stub.ResumeRun(resume(started.run_id, {"ok": True}, **form))

    assert at_b.status == SUSPENDED
    assert paths(at_b) == [["inner", "b"]]
    assert payloads(at_b) == {"inner.b": {"step": "b"}}
    assert at_b.version > started.version
    assert step_statuses(at_b) == {
        "first": STEP.STEP_STATUS_SUCCESS,
        "inner": STEP.STEP_STATUS_SUSPENDED,
        "inner.a": STEP.STEP_STATUS_SUCCESS,
        "inner.b": STEP.STEP_STATUS_SUSPENDED,
    }
    assert lines(log) == ["one", "a"]
    await assert_nested_resumable(stub, started.run_id, log)


@pytest.mark.parametrize("form", SECOND_FORMS.values(), ids=SECOND_FORMS.keys())
async def test_second_nested_suspension_resumes_to_success_with_each_step_once(
    stub: WorkflowServiceStub, tmp_path: Path, form: dict[str, Any]
) -> None:
    """inner.b resumes by full path, wrapper, omitted step or its label "inner-b"; the run
    succeeds, every step (wrapper and leaves too) is SUCCESS and each ran exactly once."""
    at_b, log = await start_at_b(stub, tmp_path)

    done = await stub.ResumeRun(resume(at_b.run_id, {"n": 4}, **form))

    assert done.status == SUCCESS
    assert to_json(done.result) == {"n": 4, "done": True}
    assert list(done.suspended) == []
    assert step_statuses(done) == dict.fromkeys(
        ["first", "inner", "inner.a", "inner.b", "last"], STEP.STEP_STATUS_SUCCESS
    )
    assert to_json(done.steps["inner.b"].resume_payload) == {"n": 4}
    assert lines(log) == ["one", "a", "b", "last"]


async def test_nested_label_is_reported_with_its_full_path(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """include_resume_labels maps a nested step's label to its full path."""
    at_b, _ = await start_at_b(stub, tmp_path)
    options = message_pb2.OutputOptions(include_resume_labels=True)

    run = await stub.GetRun(rr.GetRunRequest(run_id=at_b.run_id, output_options=options))

    assert set(run.result.resume_labels) == {"inner-b"}
    assert list(run.result.resume_labels["inner-b"].step.segments) == ["inner", "b"]


# -- refused nested resumes: the run stays suspended, unchanged, resumable -----------------


@pytest.mark.parametrize(
    "segments",
    [["a"], ["first", "a"], ["last", "a"], ["inner", "b"], ["inner", "nope"], ["first"]],
    ids=[
        "inner-id-alone",
        "wrong-wrapper",
        "wrapper-not-reached",
        "nested-step-not-reached",
        "no-such-nested-step",
        "completed-step",
    ],
)
async def test_path_to_no_suspended_nested_step_fails_precondition(
    stub: WorkflowServiceStub, tmp_path: Path, segments: list[str]
) -> None:
    """A path must start at the top level and lead to a suspended leaf: an inner id alone,
    a path through the wrong wrapper or to a step not suspended is STEP_NOT_SUSPENDED,
    listing inner.a; the run is unchanged and still resumable."""
    started, log = await start_nested(stub, tmp_path)

    error = await refused(stub, resume(started.run_id, {"ok": True}, step=path(*segments)), log)

    assert_error(
        error,
        grpc.StatusCode.FAILED_PRECONDITION,
        "STEP_NOT_SUSPENDED",
        run_id=started.run_id,
        step_path=".".join(segments),
    )
    assert error.suspended == [["inner", "a"]]
    assert "inner.a" in error.message
    await assert_nested_resumable(stub, started.run_id, log)


async def test_a_segment_containing_a_dot_is_never_split(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """["inner.a"] is one segment naming no step: STEP_NOT_SUSPENDED, not inner -> a."""
    started, log = await start_nested(stub, tmp_path)

    error = await refused(stub, resume(started.run_id, {"ok": True}, step=path("inner.a")), log)

    assert_error(error, grpc.StatusCode.FAILED_PRECONDITION, "STEP_NOT_SUSPENDED")
    assert error.suspended == [["inner", "a"]]
    await assert_nested_resumable(stub, started.run_id, log)


async def test_label_of_a_nested_step_not_yet_suspended_is_not_found(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """The label "inner-b" exists only once inner.b suspends; before, it is LABEL_NOT_FOUND."""
    started, log = await start_nested(stub, tmp_path)

    error = await refused(stub, resume(started.run_id, {"n": 1}, label="inner-b"), log)

    assert_error(
        error,
        grpc.StatusCode.FAILED_PRECONDITION,
        "LABEL_NOT_FOUND",
        run_id=started.run_id,
        label="inner-b",
    )
    assert error.suspended == [["inner", "a"]]
    await assert_nested_resumable(stub, started.run_id, log)


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        ({"n": -1}, {"resume_data.n"}),
        ({"n": "many"}, {"resume_data.n"}),
        ({}, {"resume_data.n"}),
        (None, {"resume_data"}),
    ],
    ids=["negative", "wrong-type", "missing", "omitted"],
)
async def test_invalid_data_for_a_nested_leaf_is_refused_and_the_run_stays_suspended(
    stub: WorkflowServiceStub, tmp_path: Path, data: Any, fields: set[str]
) -> None:
    """Resume data for a nested leaf is validated against the leaf's schema before anything
    changes: INVALID_RESUME_DATA naming the field; the run stays SUSPENDED at the same
    version with the same suspended path, and a correct resume then succeeds (Mastra
    fails the whole run here)."""
    at_b, log = await start_at_b(stub, tmp_path)

    error = await refused(stub, resume(at_b.run_id, data, step=path("inner", "b")), log)

    assert_error(
        error,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_RESUME_DATA",
        run_id=at_b.run_id,
        step_path="inner.b",
    )
    assert set(error.violations) == fields
    run = await stub.GetRun(rr.GetRunRequest(run_id=at_b.run_id))
    assert (run.status, run.result.version, paths(run.result)) == (
        SUSPENDED,
        at_b.version,
        [["inner", "b"]],
    )
    await assert_nested_resumable(stub, at_b.run_id, log)


@pytest.mark.parametrize(
    "form", [{"step": path("inner")}, {}, {"label": "inner-b"}], ids=["wrapper", "omitted", "label"]
)
async def test_invalid_nested_data_is_refused_whichever_way_the_leaf_is_named(
    stub: WorkflowServiceStub, tmp_path: Path, form: dict[str, Any]
) -> None:
    """The leaf's schema applies when the leaf is found through its wrapper, by auto-detect
    or by label too (the wrapper itself has no resume schema)."""
    at_b, log = await start_at_b(stub, tmp_path)

    error = await refused(stub, resume(at_b.run_id, {"n": -1}, **form), log)

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESUME_DATA")
    assert set(error.violations) == {"resume_data.n"}
    await assert_nested_resumable(stub, at_b.run_id, log)


async def test_invalid_data_for_the_first_nested_leaf_is_refused(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """inner.a's schema ({ok: bool}) is checked too; the run stays at inner.a."""
    started, log = await start_nested(stub, tmp_path)

    error = await refused(stub, resume(started.run_id, {"ok": "maybe"}), log)

    assert_error(
        error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESUME_DATA", step_path="inner.a"
    )
    assert set(error.violations) == {"resume_data.ok"}
    await assert_nested_resumable(stub, started.run_id, log)


async def test_invalid_legal_decision_is_refused_and_the_review_can_go_on(
    stub: WorkflowServiceStub,
) -> None:
    """In the example, an empty reviewer name is refused for review.legal-review; the run
    is unchanged and a correct decision then moves it to the editor."""
    started = await start_review(stub)

    error = await refused(
        stub, resume(started.run_id, {"approved": True, "reviewer": ""}, label="legal")
    )

    assert_error(
        error,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_RESUME_DATA",
        step_path="review.legal-review",
    )
    assert set(error.violations) == {"resume_data.reviewer"}
    legal = await stub.ResumeRun(
        resume(started.run_id, {"approved": True, "reviewer": "lee"}, label="legal")
    )
    assert paths(legal) == [["review", "editor-signoff"]]


async def test_version_mismatch_on_a_nested_resume_leaves_the_run_unchanged(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """expected_version guards nested resumes too: the version before inner.a was resumed
    no longer matches once the run waits at inner.b."""
    started, log = await start_nested(stub, tmp_path)
    at_b = await stub.ResumeRun(resume(started.run_id, {"ok": True}))

    error = await refused(
        stub, resume(started.run_id, {"n": 1}, expected_version=started.version), log
    )

    assert_error(
        error,
        grpc.StatusCode.ABORTED,
        "VERSION_MISMATCH",
        expected_version=str(started.version),
        actual_version=str(at_b.version),
    )
    await assert_nested_resumable(stub, started.run_id, log)


async def test_validate_only_on_a_nested_leaf_changes_nothing(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A dry run of a nested resume answers the current result and runs nothing."""
    started, log = await start_nested(stub, tmp_path)
    before = await observe(stub, started.run_id, log)

    dry = await stub.ResumeRun(
        resume(started.run_id, {"ok": True}, step=path("inner", "a"), validate_only=True)
    )

    assert (dry.status, dry.version, paths(dry)) == (SUSPENDED, started.version, [["inner", "a"]])
    assert await observe(stub, started.run_id, log) == before
    await assert_nested_resumable(stub, started.run_id, log)


async def test_repeated_request_id_after_the_run_moved_on_returns_the_first_outcome(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A retry of the first nested resume, arriving after the second one finished the run,
    answers the first call's outcome (SUSPENDED at inner.b, its version) and runs nothing."""
    started, log = await start_nested(stub, tmp_path)
    first = await stub.ResumeRun(resume(started.run_id, {"ok": True}, request_id="first"))
    done = await stub.ResumeRun(resume(started.run_id, {"n": 2}, request_id="second"))
    assert done.status == SUCCESS

    again = await stub.ResumeRun(resume(started.run_id, {"ok": True}, request_id="first"))

    assert (again.status, again.version, paths(again)) == (
        SUSPENDED,
        first.version,
        [["inner", "b"]],
    )
    assert lines(log) == ["one", "a", "b", "last"]
    run = await stub.GetRun(rr.GetRunRequest(run_id=started.run_id))
    assert (run.status, run.result.version) == (SUCCESS, done.version)
