"""Request building shared by both clients: step paths, optional fields, metadata, and the
options of the channel that a client opens."""

from __future__ import annotations

import grpc
import pytest

from waystation_client import RunStatus, StepPath, from_value, step_path
from waystation_client._requests import (
    RECEIVE_LIMIT_OPTION,
    call_metadata,
    channel_options,
    list_runs_request,
    restart_run_request,
    resume_request,
    start_run_request,
    time_travel_run_request,
)
from waystation_client.v1 import message_pb2


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


def test_an_empty_step_text_or_none_means_no_step_not_a_path_of_one_empty_segment() -> None:
    """`step=""` is no path at all (the server then picks the one suspended step), as is
    `step=None`; only a non-empty text is split on "."."""
    assert list(step_path("").segments) == []
    empty = resume_request("r", step="")
    assert list(empty.step.segments) == []
    assert not resume_request("r", step=None).HasField("step")
    assert list(resume_request("r", step="a").step.segments) == ["a"]


def test_resume_request_sends_expected_version_zero_as_a_value() -> None:
    """expected_version is optional in the proto so that 0 can be compared with, not dropped."""
    request = resume_request("r", expected_version=0)
    assert request.HasField("expected_version") and request.expected_version == 0
    assert resume_request("r", expected_version=7).expected_version == 7
    assert not resume_request("r", expected_version=None).HasField("expected_version")


def test_include_resume_labels_alone_sets_output_options() -> None:
    """Every request with output options carries include_resume_labels without include_state."""
    sent = [
        start_run_request("w", include_resume_labels=True).output_options,
        resume_request("r", include_resume_labels=True).output_options,
        restart_run_request("r", include_resume_labels=True).output_options,
        time_travel_run_request("r", "a", include_resume_labels=True).output_options,
    ]
    wanted = message_pb2.OutputOptions(include_state=False, include_resume_labels=True)
    assert sent == [wanted] * 4
    assert not start_run_request("w").HasField("output_options")


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


def test_a_channel_the_client_opens_has_no_receive_limit_unless_one_is_given() -> None:
    other = ("grpc.primary_user_agent", "x")
    assert channel_options("h:1", None, None) == [(RECEIVE_LIMIT_OPTION, -1)]
    assert channel_options("h:1", [other], 1024) == [other, (RECEIVE_LIMIT_OPTION, 1024)]
    # The option in `options` counts when the keyword is not given, and loses when it is.
    assert channel_options("h:1", [(RECEIVE_LIMIT_OPTION, 8)], None) == [(RECEIVE_LIMIT_OPTION, 8)]
    assert channel_options("h:1", [(RECEIVE_LIMIT_OPTION, 8)], 9) == [(RECEIVE_LIMIT_OPTION, 9)]


def test_a_callers_channel_keeps_its_settings_and_a_receive_limit_for_it_is_refused() -> None:
    with grpc.insecure_channel("127.0.0.1:1") as channel:
        assert channel_options(channel, None, None) == []
        with pytest.raises(ValueError, match=RECEIVE_LIMIT_OPTION):
            channel_options(channel, None, 1024)
