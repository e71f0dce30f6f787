"""Suspend and resume inside `.foreach` (DESIGN.md §4, blocks.py), through a real server.

Items start in windows of `concurrency`, in index order; once an item of a window suspends,
no later window starts until every suspended item is resumed, so which items ran never
depends on timing. `foreach_index` or a label resumes one item; neither resumes every
suspended item with the same data. The output is in input order.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from tests.conftest import FLOW_WORKFLOWS
from tests.support.api import call_error, path, paths, to_json, value
from waystation.api.v1 import enums_pb2, message_pb2
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub

WORKFLOWS = FLOW_WORKFLOWS
SUSPENDED = enums_pb2.RUN_STATUS_SUSPENDED
SUCCESS = enums_pb2.RUN_STATUS_SUCCESS
STEP = enums_pb2.StepStatus
ITEM_SUSPENDED = STEP.STEP_STATUS_SUSPENDED
ITEM_SUCCESS = STEP.STEP_STATUS_SUCCESS


# -- helpers ------------------------------------------------------------------------------


def items_input(*names: str) -> list[dict[str, Any]]:
    """Items for items-1 / items-3: a name ending in "?" asks (suspends)."""
    return [{"name": n.rstrip("?"), "ask": True} if n.endswith("?") else {"name": n} for n in names]


async def start(
    stub: WorkflowServiceStub, workflow_id: str, items: list[dict[str, Any]]
) -> message_pb2.WorkflowResult:
    return await stub.StartRun(
        rr.StartRunRequest(
            workflow_id=workflow_id,
            run_id=f"{workflow_id}-{uuid.uuid4().hex[:12]}",
            input_data=value(items),
            output_options=LABELS,
        )
    )


LABELS = message_pb2.OutputOptions(include_resume_labels=True)


def resume(run_id: str, data: Any, **fields: Any) -> rr.ResumeRequest:
    return rr.ResumeRequest(run_id=run_id, resume_data=value(data), output_options=LABELS, **fields)


def item_statuses(result: message_pb2.WorkflowResult, step: str = "item") -> dict[int, int]:
    """The per-item records of a foreach: index -> step status."""
    return {i: r.status for i, r in sorted(result.steps[step].items.items())}


async def get_result(stub: WorkflowServiceStub, run_id: str) -> message_pb2.WorkflowResult:
    return (await stub.GetRun(rr.GetRunRequest(run_id=run_id))).result


# -- concurrency 1 ------------------------------------------------------------------------


async def test_at_concurrency_one_the_queue_stops_at_the_first_suspended_item(
    stub: WorkflowServiceStub,
) -> None:
    """With x(ask), y(ask), z only x has started: the foreach and x are SUSPENDED, y and z
    have no record yet."""
    started = await start(stub, "items-1", items_input("x?", "y?", "z"))
    assert started.status == SUSPENDED
    assert paths(started) == [["item"]]
    assert started.steps["item"].status == STEP.STEP_STATUS_SUSPENDED
    assert item_statuses(started) == {0: ITEM_SUSPENDED}
    assert to_json(started.suspend_payload["item"]) == {"item": "x"}


async def test_a_label_and_a_foreach_index_that_disagree_are_invalid_argument(
    stub: WorkflowServiceStub,
) -> None:
    started = await start(stub, "items-3", items_input("x?", "y?"))
    assert item_statuses(started) == {0: ITEM_SUSPENDED, 1: ITEM_SUSPENDED}
    error = await call_error(
        stub.ResumeRun(resume(started.run_id, {"ok": True}, label="item-x", foreach_index=1))
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert "label 'item-x' resumes item 0" in error.violations["foreach_index"]
    unchanged = await get_result(stub, started.run_id)
    assert item_statuses(unchanged) == {0: ITEM_SUSPENDED, 1: ITEM_SUSPENDED}


async def test_at_concurrency_one_items_resume_by_index_then_by_label_in_input_order(
    stub: WorkflowServiceStub,
) -> None:
    """Resuming item 0 runs x and then y, which suspends; resuming y by its label runs y and
    z; the output lists the items in input order."""
    started = await start(stub, "items-1", items_input("x?", "y?", "z"))
    by_index = await stub.ResumeRun(resume(started.run_id, {"ok": True}, foreach_index=0))
    assert by_index.status == SUSPENDED
    assert paths(by_index) == [["item"]]
    assert item_statuses(by_index) == {0: ITEM_SUCCESS, 1: ITEM_SUSPENDED}
    assert to_json(by_index.suspend_payload["item"]) == {"item": "y"}

    by_label = await stub.ResumeRun(resume(started.run_id, {"ok": False}, label="item-y"))
    assert by_label.status == SUCCESS
    assert item_statuses(by_label) == {0: ITEM_SUCCESS, 1: ITEM_SUCCESS, 2: ITEM_SUCCESS}
    assert to_json(by_label.result) == [
        {"name": "x", "ok": True},
        {"name": "y", "ok": False},
        {"name": "z", "ok": None},
    ]


# -- concurrency 3 ------------------------------------------------------------------------


async def test_at_concurrency_three_only_the_first_window_runs(stub: WorkflowServiceStub) -> None:
    """With x(ask), y(ask), z, w(ask) the window 0-2 ran (x, y suspended, z done) and item 3
    did not start."""
    started = await start(stub, "items-3", items_input("x?", "y?", "z", "w?"))
    assert started.status == SUSPENDED
    assert paths(started) == [["item"]]
    assert item_statuses(started) == {0: ITEM_SUSPENDED, 1: ITEM_SUSPENDED, 2: ITEM_SUCCESS}
    assert to_json(started.steps["item"].items[2].output) == {"name": "z", "ok": None}


async def test_resume_without_index_or_label_resumes_every_suspended_item(
    stub: WorkflowServiceStub,
) -> None:
    """Neither index nor label: x and y both resume with the same data, then the next
    window starts and w suspends; resuming w finishes with the output in input order."""
    started = await start(stub, "items-3", items_input("x?", "y?", "z", "w?"))
    all_items = await stub.ResumeRun(resume(started.run_id, {"ok": True}))
    assert all_items.status == SUSPENDED
    assert item_statuses(all_items) == {
        0: ITEM_SUCCESS,
        1: ITEM_SUCCESS,
        2: ITEM_SUCCESS,
        3: ITEM_SUSPENDED,
    }
    items = all_items.steps["item"].items
    assert to_json(items[0].resume_payload) == to_json(items[1].resume_payload) == {"ok": True}
    assert to_json(all_items.suspend_payload["item"]) == {"item": "w"}

    done = await stub.ResumeRun(resume(started.run_id, {"ok": False}, label="item-w"))
    assert done.status == SUCCESS
    assert to_json(done.result) == [
        {"name": "x", "ok": True},
        {"name": "y", "ok": True},
        {"name": "z", "ok": None},
        {"name": "w", "ok": False},
    ]


async def test_resume_by_index_leaves_the_other_suspended_item_waiting(
    stub: WorkflowServiceStub,
) -> None:
    """Resuming item 1 alone finishes y; x keeps its suspension and payload, and the next
    window does not start while x is suspended."""
    started = await start(stub, "items-3", items_input("x?", "y?", "z", "w?"))
    one = await stub.ResumeRun(resume(started.run_id, {"ok": True}, foreach_index=1))
    assert one.status == SUSPENDED
    assert item_statuses(one) == {0: ITEM_SUSPENDED, 1: ITEM_SUCCESS, 2: ITEM_SUCCESS}
    assert to_json(one.steps["item"].items[0].suspend_payload) == {"item": "x"}
    assert list(one.resume_labels) == ["item-x"]
    assert one.resume_labels["item-x"].foreach_index == 0


async def test_foreach_over_an_empty_list_outputs_an_empty_list(
    stub: WorkflowServiceStub,
) -> None:
    """No items: the foreach succeeds at once with an empty output."""
    done = await start(stub, "items-3", [])
    assert done.status == SUCCESS
    assert to_json(done.result) == []
    assert item_statuses(done) == {}


async def test_foreach_over_a_non_list_fails_the_run(stub: WorkflowServiceStub) -> None:
    """A foreach needs a list: anything else fails the run with INVALID_STEP_INPUT, and the
    foreach step's record is FAILED, as for any step whose input is invalid."""
    result = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="items-1",
            run_id=f"items-1-{uuid.uuid4().hex[:12]}",
            input_data=value({"name": "x"}),
        )
    )
    assert result.status == enums_pb2.RUN_STATUS_FAILED
    assert result.error.reason == "INVALID_STEP_INPUT"
    assert list(result.error.step.segments) == ["item"]
    assert result.steps["item"].status == STEP.STEP_STATUS_FAILED  # as any step failing


async def test_foreach_of_a_nested_workflow_resumes_every_suspended_item_at_once(
    stub: WorkflowServiceStub,
) -> None:
    """Two items of one window suspend inside the nested body; a resume naming the inner
    leaf without an index resumes both with the same data, and the next window runs."""
    items = [{"name": "a", "ask": True}, {"name": "b", "ask": True}, {"name": "c"}]
    started = await start(stub, "item-flows", items)
    assert item_statuses(started, "item-flow") == {0: ITEM_SUSPENDED, 1: ITEM_SUSPENDED}
    done = await stub.ResumeRun(
        resume(started.run_id, {"ok": True}, step=path("item-flow", "check"))
    )
    assert done.status == SUCCESS
    assert to_json(done.result) == [
        {"name": "a", "ok": True},
        {"name": "b", "ok": True},
        {"name": "c", "ok": None},
    ]


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("index", [2, 3, 99], ids=["finished", "not-started", "out-of-range"])
async def test_foreach_index_of_an_item_that_is_not_suspended_is_refused(
    stub: WorkflowServiceStub, index: int
) -> None:
    """A finished, not yet started or out-of-range item cannot be resumed: the call fails
    FAILED_PRECONDITION FOREACH_INDEX_NOT_SUSPENDED and the run is unchanged."""
    started = await start(stub, "items-3", items_input("x?", "y?", "z", "w?"))
    error = await call_error(
        stub.ResumeRun(resume(started.run_id, {"ok": True}, foreach_index=index))
    )
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "FOREACH_INDEX_NOT_SUSPENDED"
    assert error.metadata["foreach_index"] == str(index)
    assert error.suspended == [["item"]]
    after = await get_result(stub, started.run_id)
    assert after.status == SUSPENDED
    assert after.version == started.version
    assert item_statuses(after) == item_statuses(started)


# -- payloads and labels ------------------------------------------------------------------


async def test_each_suspended_item_shows_its_own_payload_and_label(
    stub: WorkflowServiceStub,
) -> None:
    """Per-item suspend payloads are on the item records; each label names its item."""
    started = await start(stub, "items-3", items_input("x?", "y?", "z", "w?"))
    items = started.steps["item"].items
    assert to_json(items[0].suspend_payload) == {"item": "x"}
    assert to_json(items[1].suspend_payload) == {"item": "y"}
    assert not items[2].HasField("suspend_payload")
    labels = {
        name: (list(t.step.segments), t.foreach_index) for name, t in started.resume_labels.items()
    }
    assert labels == {"item-x": (["item"], 0), "item-y": (["item"], 1)}


# -- nested body --------------------------------------------------------------------------


async def test_each_suspended_item_of_a_nested_body_shows_its_own_payload(
    stub: WorkflowServiceStub,
) -> None:
    """The inner step of a foreach's nested body has a record per item: it is listed at
    its path with those records as `items`, so every waiting item's suspend payload can be
    read (only the first one could be, in `suspend_payload`)."""
    items = [{"name": "a", "ask": True}, {"name": "b", "ask": True}]
    started = await start(stub, "item-flows", items)
    inner = started.steps["item-flow.check"]
    assert inner.status == STEP.STEP_STATUS_SUSPENDED
    assert {i: to_json(r.suspend_payload) for i, r in inner.items.items()} == {
        0: {"check": "a"},
        1: {"check": "b"},
    }
    one = await stub.ResumeRun(resume(started.run_id, {"ok": True}, foreach_index=1))
    inner = one.steps["item-flow.check"]
    assert {i: r.status for i, r in inner.items.items()} == {
        0: STEP.STEP_STATUS_SUSPENDED,
        1: STEP.STEP_STATUS_SUCCESS,
    }
    assert to_json(inner.items[1].output) == {"name": "b", "ok": True}


async def test_foreach_of_a_nested_workflow_suspends_per_item_and_resumes_by_index(
    stub: WorkflowServiceStub,
) -> None:
    """Items whose nested body suspends are reported at the inner leaf's path; resuming item
    0 by index lets the next window run, whose suspended item then resumes by step and
    index; the output is in input order."""
    items = [{"name": "a", "ask": True}, {"name": "b"}, {"name": "c", "ask": True}]
    started = await start(stub, "item-flows", items)
    assert started.status == SUSPENDED
    assert paths(started) == [["item-flow", "check"]]
    assert to_json(started.suspend_payload["item-flow.check"]) == {"check": "a"}
    assert item_statuses(started, "item-flow") == {0: ITEM_SUSPENDED, 1: ITEM_SUCCESS}
    label = started.resume_labels["check-a"]
    assert (list(label.step.segments), label.foreach_index) == (["item-flow", "check"], 0)

    first = await stub.ResumeRun(resume(started.run_id, {"ok": True}, foreach_index=0))
    assert first.status == SUSPENDED
    assert paths(first) == [["item-flow", "check"]]
    assert to_json(first.suspend_payload["item-flow.check"]) == {"check": "c"}
    assert item_statuses(first, "item-flow") == {
        0: ITEM_SUCCESS,
        1: ITEM_SUCCESS,
        2: ITEM_SUSPENDED,
    }

    done = await stub.ResumeRun(
        resume(started.run_id, {"ok": False}, step=path("item-flow", "check"), foreach_index=2)
    )
    assert done.status == SUCCESS
    assert to_json(done.result) == [
        {"name": "a", "ok": True},
        {"name": "b", "ok": None},
        {"name": "c", "ok": False},
    ]


async def test_a_refused_resume_of_many_labelled_items_keeps_its_reason(
    stub: WorkflowServiceStub,
) -> None:
    """300 items waiting under labels of 41 characters: a resume naming an unknown label
    was answered RESOURCE_EXHAUSTED "Stream removed" (the SuspendedStepsDetail listed every
    label, over gRPC's limit for trailers) instead of LABEL_NOT_FOUND. The detail keeps
    what fits and ErrorInfo says how many it left out."""
    names = [f"{uuid.uuid4()}?" for _ in range(300)]
    started = await start(stub, "items-400", items_input(*names))
    assert started.status == SUSPENDED
    assert len(started.suspended) == 1

    error = await call_error(stub.ResumeRun(resume(started.run_id, {"ok": True}, label="nope")))

    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "LABEL_NOT_FOUND"
    assert error.suspended == [["item"]]
    assert 10 < len(error.labels) < 300
    assert set(error.labels) <= {f"item-{name.rstrip('?')}" for name in names}
    assert error.metadata["omitted"].startswith(f"{300 - len(error.labels)} more ")
    assert (await get_result(stub, started.run_id)).status == SUSPENDED
