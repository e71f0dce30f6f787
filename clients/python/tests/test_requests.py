"""Request building shared by both clients: step paths, optional fields, metadata."""

from __future__ import annotations

from waystation_client import RunStatus, StepPath, from_value, step_path
from waystation_client._requests import (
    call_metadata,
    list_runs_request,
    restart_run_request,
    resume_request,
    start_run_request,
)


def test_a_step_path_is_split_on_dots_only_when_given_as_text() -> None:
    assert list(step_path("review.legal-review").segments) == ["review", "legal-review"]
    assert list(step_path(["a.b", "c"]).segments) == ["a.b", "c"]
    assert step_path(StepPath(segments=["x"])) == StepPath(segments=["x"])


def test_resume_request_sets_optional_zero_values_and_leaves_none_unset() -> None:
    request = resume_request("r", step="a.b", resume_data={"ok": True}, foreach_index=0)
    assert request.HasField("foreach_index") and request.foreach_index == 0
    assert not request.HasField("expected_version")
    assert not request.HasField("output_options")
    assert list(request.step.segments) == ["a", "b"]
    assert from_value(request.resume_data) == {"ok": True}
    assert not resume_request("r").HasField("step")


def test_start_run_request_carries_json_data_and_output_options() -> None:
    request = start_run_request(
        "w", input_data=[1], initial_state={"n": 1}, request_context={}, include_state=True
    )
    assert from_value(request.input_data) == [1]
    assert request.initial_state.fields["n"].number_value == 1
    assert request.HasField("request_context")
    assert request.output_options.include_state
    assert not start_run_request("w").HasField("input_data")


def test_restart_run_request_carries_force_only_when_asked() -> None:
    assert restart_run_request("r", force=True).force is True
    assert restart_run_request("r").force is False


def test_statuses_are_accepted_by_short_name_full_name_or_value() -> None:
    request = list_runs_request(statuses=["suspended", "RUN_STATUS_FAILED", 5])
    assert list(request.statuses) == [
        RunStatus.RUN_STATUS_SUSPENDED,
        RunStatus.RUN_STATUS_FAILED,
        RunStatus.RUN_STATUS_SUCCESS,
    ]


def test_call_metadata_keeps_every_source_in_order_then_adds_trace_context() -> None:
    sent = call_metadata(
        {"authorization": "Bearer t"}, [("x-a", "1"), ("x-a", "2")], None, traceparent="tp"
    )
    assert sent == (
        ("authorization", "Bearer t"),
        ("x-a", "1"),
        ("x-a", "2"),
        ("traceparent", "tp"),
    )
    assert call_metadata(None, tracestate="k=v") == (("tracestate", "k=v"),)
    assert call_metadata(None, {}) is None
