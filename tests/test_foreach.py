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
from waystation.engine import RunStatus, WorkflowResultData
from waystation.engine.model import LabelTarget, StepRecord, StepStatus

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


async def test_resume_by_label_leaves_the_other_suspended_item_waiting(
    stub: WorkflowServiceStub,
) -> None:
    """A label picks one item (DESIGN.md §4) while others wait too: item-x resumes x alone,
    and y still waits under its own label."""
    started = await start(stub, "items-3", items_input("x?", "y?"))
    assert item_statuses(started) == {0: ITEM_SUSPENDED, 1: ITEM_SUSPENDED}
    one = await stub.ResumeRun(resume(started.run_id, {"ok": True}, label="item-x"))
    assert one.status == SUSPENDED
    assert item_statuses(one) == {0: ITEM_SUCCESS, 1: ITEM_SUSPENDED}
    assert list(one.resume_labels) == ["item-y"]


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


# -- a foreach inside the items of another ------------------------------------------------

GROUPS = [
    [{"name": "a"}, {"name": "b", "ask": True}],
    [{"name": "c", "ask": True}, {"name": "d", "ask": True}],
    [{"name": "e"}],
]


def item_tree(step: message_pb2.StepResult) -> dict[int, Any]:
    """A step's items as nested dicts: index -> (status, output or suspend payload), or
    index -> the items of an outer foreach's item."""
    out: dict[int, Any] = {}
    for index, item in sorted(step.items.items()):
        if item.items:
            out[index] = item_tree(item)
        elif item.status == ITEM_SUSPENDED:
            out[index] = ("suspended", to_json(item.suspend_payload))
        else:
            out[index] = (STEP.Name(item.status), to_json(item.output))
    return out


async def test_a_foreach_inside_a_foreachs_items_lists_each_item_under_its_outer_item(
    stub: WorkflowServiceStub,
) -> None:
    """Item j of the inner foreach in item i of the outer one is `items[i].items[j]`: each
    keeps its own status, output and suspend payload (one flat `items` mixed the groups:
    the last group's records overwrote the others', and the step read SUCCESS)."""
    started = await start(stub, "group-flows", GROUPS)
    assert started.status == SUSPENDED
    assert paths(started) == [["group-flow", "check"]]
    for result in (started, await get_result(stub, started.run_id)):
        check = result.steps["group-flow.check"]
        assert check.status == ITEM_SUSPENDED
        assert item_tree(check) == {
            0: {
                0: ("STEP_STATUS_SUCCESS", {"name": "a", "ok": None}),
                1: ("suspended", {"check": "b"}),
            },
            1: {0: ("suspended", {"check": "c"}), 1: ("suspended", {"check": "d"})},
            2: {0: ("STEP_STATUS_SUCCESS", {"name": "e", "ok": None})},
        }
        assert [check.items[i].status for i in range(3)] == [
            ITEM_SUSPENDED,
            ITEM_SUSPENDED,
            ITEM_SUCCESS,
        ]


async def test_a_label_resumes_only_its_own_item_of_a_foreach_inside_a_foreach(
    stub: WorkflowServiceStub,
) -> None:
    """Labels of items of an inner foreach name the item's record: check-b (group 0, item
    1) resumes b alone, not d (group 1, item 1) nor c, which share its step or index."""
    started = await start(stub, "group-flows", GROUPS)
    labels = {k: (list(v.step.segments), v.foreach_index) for k, v in started.resume_labels.items()}
    assert labels == {
        "check-b": (["group-flow", "check"], 1),
        "check-c": (["group-flow", "check"], 0),
        "check-d": (["group-flow", "check"], 1),
    }
    one = await stub.ResumeRun(resume(started.run_id, {"ok": True}, label="check-b"))
    assert one.status == SUSPENDED
    tree = item_tree(one.steps["group-flow.check"])
    assert tree[0][1] == ("STEP_STATUS_SUCCESS", {"name": "b", "ok": True})
    assert tree[1] == {0: ("suspended", {"check": "c"}), 1: ("suspended", {"check": "d"})}
    assert sorted(one.resume_labels) == ["check-c", "check-d"]
    two = await stub.ResumeRun(resume(started.run_id, {"ok": False}, label="check-d"))
    assert item_tree(two.steps["group-flow.check"])[1] == {
        0: ("suspended", {"check": "c"}),
        1: ("STEP_STATUS_SUCCESS", {"name": "d", "ok": False}),
    }
    done = await stub.ResumeRun(resume(started.run_id, {"ok": True}, label="check-c"))
    assert done.status == SUCCESS
    assert [[item["ok"] for item in group] for group in to_json(done.result)] == [
        [None, True],
        [True, False],
        [None],
    ]


async def test_a_foreach_index_that_names_an_item_in_several_outer_items_is_refused(
    stub: WorkflowServiceStub,
) -> None:
    """`foreach_index` is the item's index in the innermost foreach: 1 names b (group 0)
    and d (group 1), so it is refused FAILED_PRECONDITION STEP_AMBIGUOUS, pointing to the
    labels, and nothing changes; 0 names c alone and resumes it (an index once matched
    every item with that index at any level: b, c and d together)."""
    started = await start(stub, "group-flows", GROUPS)
    step = path("group-flow", "check")
    error = await call_error(
        stub.ResumeRun(resume(started.run_id, {"ok": True}, step=step, foreach_index=1))
    )
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "STEP_AMBIGUOUS"
    assert "item 0, item 1" in error.message and "resume label" in error.message
    assert error.metadata["foreach_index"] == "1"
    assert (await get_result(stub, started.run_id)).version == started.version
    one = await stub.ResumeRun(resume(started.run_id, {"ok": True}, step=step, foreach_index=0))
    tree = item_tree(one.steps["group-flow.check"])
    assert tree[1][0] == ("STEP_STATUS_SUCCESS", {"name": "c", "ok": True})
    assert tree[0][1] == ("suspended", {"check": "b"})
    assert tree[1][1] == ("suspended", {"check": "d"})


async def test_an_item_that_aborts_cancels_the_run_naming_the_step_and_the_item(
    stub: WorkflowServiceStub,
) -> None:
    """`ctx.abort()` in item 1's nested workflow cancels the run: ABORTED, at the step's
    API path, with the item in the message (which showed the internal "abort-flow#1")."""
    started = await start(stub, "abort-items", [{}, {"abort": True}, {}])
    assert started.status == enums_pb2.RUN_STATUS_CANCELED
    assert started.error.reason == "ABORTED"
    assert started.error.message == "step [abort-flow.aborter] (item 1) aborted the run"
    assert list(started.error.step.segments) == ["abort-flow", "aborter"]
    statuses = item_statuses(started, "abort-flow.aborter")
    assert statuses == {0: ITEM_SUCCESS, 1: STEP.STEP_STATUS_CANCELED}


def test_results_and_labels_stored_before_items_could_nest_read_as_they_were() -> None:
    """A request's stored outcome keyed its items by one index ("3"), and a stored label
    held no record: both still read, the label naming the record its path and index
    name; nested item keys ("1.0") round-trip."""
    record = StepRecord(StepStatus.SUSPENDED, suspend_payload={"check": "x"})
    result = WorkflowResultData("r", "w", RunStatus.SUSPENDED, 4)
    stored = result.to_json() | {
        "items": {"item": {"3": record.to_json()}},
        "resume_labels": {"item-x": {"path": ["item"], "foreach_index": 3}},
    }
    read = WorkflowResultData.from_json(stored)
    assert read.items == {"item": {(3,): record}}
    label = read.resume_labels["item-x"]
    assert (label.path, label.foreach_index, label.record) == (("item",), 3, None)
    assert label.names(("item#3",)) and not label.names(("item#2",))
    nested = WorkflowResultData(
        "r",
        "w",
        RunStatus.SUSPENDED,
        4,
        items={"g.check": {(1,): record, (1, 0): record}},
        resume_labels={"check-c": LabelTarget.of(("g#1", "check#0"))},
    )
    again = WorkflowResultData.from_json(nested.to_json())
    assert again.items == nested.items
    assert again.resume_labels["check-c"] == LabelTarget(("g", "check"), 0, ("g#1", "check#0"))
    assert not again.resume_labels["check-c"].names(("g#0", "check#0"))
