"""Bad input against a live server (issue 8, item 2): every call answers a clear status,
the server stays up, and no run changes.

"Clear" means: never INTERNAL or UNKNOWN (nor UNAVAILABLE, UNIMPLEMENTED, DATA_LOSS); an
error the server raises carries a google.rpc.ErrorInfo (domain waystation.dev, a reason),
and an INVALID_ARGUMENT a BadRequest with at least one field violation. RESOURCE_EXHAUSTED
for a message above the configured limit comes from grpc itself and carries no details.

Each Hypothesis test runs against fixture runs (a suspended order-approval, a document-review
suspended inside its nested workflow, a finished and a canceled run) and compares them with
GetRun after every example: equal, or the example fails (and fresh fixtures are made, so
that shrinking sees an accurate picture). Seeds come from tests/support/fuzzing.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message as pb_message
from google.protobuf import struct_pb2, timestamp_pb2
from hypothesis import given, note
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from tests.conftest import settings_for
from tests.support import strategies as s
from tests.support.api import RichError, rich_error, value
from tests.support.fuzzing import SEEDS, Bridge, fuzz_settings, run_seeded
from waystation.api.v1 import enums_pb2, message_pb2, service_pb2_grpc
from waystation.api.v1 import request_response_pb2 as rr
from waystation.examples.document_review import EditorDecision, LegalDecision
from waystation.examples.order_approval import Approval
from waystation.transport import RunningServer, create_server

Stub = service_pb2_grpc.WorkflowServiceStub
DOMAIN = "waystation.dev"
SERVICE = "/waystation.v1.WorkflowService/"
Code = grpc.StatusCode

UNCLEAR = {Code.INTERNAL, Code.UNKNOWN, Code.UNAVAILABLE, Code.UNIMPLEMENTED, Code.DATA_LOSS}
ORDER = {"order_id": "o-1", "amount": 250.0}
SMALL_ORDER = {"order_id": "o-2", "amount": 20.0}
DOCUMENT = {"document_id": "d-1", "title": "Terms", "body": "a b c"}
APPROVAL = {"approved": True, "approver": "maria"}
RESUME_SCHEMAS: list[type[BaseModel]] = [Approval, LegalDecision, EditorDecision]
# Every step path of the fixture workflows: time travel to one of these would (rightly)
# change a fixture run, so the fuzzer sends them only with run ids that are no fixture.
VALID_PATHS = {
    ("validate",),
    ("approval",),
    ("fulfil",),
    ("prepare",),
    ("review",),
    ("review", "legal-review"),
    ("review", "editor-signoff"),
    ("publish",),
}

REQUESTS: dict[str, type[pb_message.Message]] = {
    "ListWorkflows": rr.ListWorkflowsRequest,
    "GetWorkflow": rr.GetWorkflowRequest,
    "CreateRun": rr.CreateRunRequest,
    "StartRun": rr.StartRunRequest,
    "ResumeRun": rr.ResumeRequest,
    "CancelRun": rr.CancelRunRequest,
    "GetRun": rr.GetRunRequest,
    "ListRuns": rr.ListRunsRequest,
    "WatchRun": rr.WatchRunRequest,
    "RestartRun": rr.RestartRunRequest,
    "TimeTravelRun": rr.TimeTravelRunRequest,
    "DeleteRun": rr.DeleteRunRequest,
}


# -- outcomes -----------------------------------------------------------------------------


@dataclass
class Outcome:
    code: Code
    response: Any = None
    error: RichError | None = None

    def describe(self) -> str:
        if self.error is None:
            return self.code.name
        e = self.error
        return f"{e.code.name} reason={e.reason!r} message={e.message[:300]!r} {e.violations}"


def details_of(exc: grpc.aio.AioRpcError) -> RichError:
    """The unpacked details, or a note that they disagree with the status code (grpc
    replaced the server's code, e.g. with RESOURCE_EXHAUSTED for oversized trailers)."""
    try:
        return rich_error(exc)
    except ValueError as mismatch:
        return RichError(exc.code(), exc.details() or "", reason=f"MISMATCH: {mismatch}")


async def outcome(call: Awaitable[Any]) -> Outcome:
    try:
        return Outcome(Code.OK, await call)
    except grpc.aio.AioRpcError as exc:
        return Outcome(exc.code(), error=details_of(exc))


async def stream_outcome(call: Any) -> Outcome:
    """A server-streaming call, read to its end (or its deadline)."""
    events = []
    try:
        async for event in call:
            events.append(event)
    except grpc.aio.AioRpcError as exc:
        return Outcome(exc.code(), events, details_of(exc))
    return Outcome(Code.OK, events)


def assert_clear(
    got: Outcome, what: str, allow_deadline: bool = False, allow_exhausted: bool = False
) -> None:
    """The status is one a caller can act on, with the rich details DESIGN.md §5 promises.
    RESOURCE_EXHAUSTED is grpc's own answer to a message above a limit: clear only where
    the request was above the configured limit (`allow_exhausted`)."""
    assert got.code not in UNCLEAR, f"{what}: unclear status {got.describe()}"
    if got.error is None:
        return
    if got.code == Code.DEADLINE_EXCEEDED:
        assert allow_deadline, f"{what}: the call hung until its deadline"
        return
    if got.code == Code.RESOURCE_EXHAUSTED:
        assert allow_exhausted, f"{what}: RESOURCE_EXHAUSTED for a small request: {got.describe()}"
        return
    assert got.error.domain == DOMAIN, f"{what}: no ErrorInfo in {got.describe()}"
    assert got.error.reason, f"{what}: no reason in {got.describe()}"
    if got.code == Code.INVALID_ARGUMENT:
        assert got.error.violations, f"{what}: INVALID_ARGUMENT without violations"


# -- fixture runs -------------------------------------------------------------------------


@dataclass(repr=False)
class FixtureRuns:
    """Runs that bad input must never change, and their state as GetRun showed it."""

    stub: Stub
    ids: dict[str, str] = field(default_factory=dict)
    baseline: dict[str, message_pb2.Run] = field(default_factory=dict)
    generation: int = 0

    async def make(self) -> None:
        self.generation += 1
        tag = f"fz-{self.generation}-{uuid.uuid4().hex[:6]}"
        stub = self.stub
        self.ids = {name: f"{tag}-{name}" for name in ("order", "review", "done", "canceled")}
        order = await stub.StartRun(start("order-approval", self.ids["order"], ORDER))
        review = await stub.StartRun(start("document-review", self.ids["review"], DOCUMENT))
        await stub.StartRun(start("order-approval", self.ids["done"], SMALL_ORDER))
        done = await stub.ResumeRun(
            rr.ResumeRequest(run_id=self.ids["done"], resume_data=value(APPROVAL))
        )
        await stub.StartRun(start("order-approval", self.ids["canceled"], SMALL_ORDER))
        canceled = await stub.CancelRun(rr.CancelRunRequest(run_id=self.ids["canceled"]))
        assert order.status == enums_pb2.RUN_STATUS_SUSPENDED
        assert [list(p.segments) for p in review.suspended] == [["review", "legal-review"]]
        assert done.status == enums_pb2.RUN_STATUS_SUCCESS
        assert canceled.status == enums_pb2.RUN_STATUS_CANCELED
        self.baseline = await self.snapshot()

    async def snapshot(self) -> dict[str, message_pb2.Run]:
        options = message_pb2.OutputOptions(include_state=True, include_resume_labels=True)
        return {
            run_id: await self.stub.GetRun(
                rr.GetRunRequest(run_id=run_id, output_options=options), timeout=10
            )
            for run_id in self.ids.values()
        }

    async def changed(self) -> list[str]:
        """The fixture runs that differ from their baseline."""
        now = await self.snapshot()
        return [run_id for run_id, run in now.items() if run != self.baseline[run_id]]

    async def assert_unchanged(self, what: str) -> None:
        changed = await self.changed()
        if changed:
            before = {r: self.baseline[r] for r in changed}
            await self.make()  # fresh fixtures, so that shrinking starts from a clean state
            raise AssertionError(f"{what} changed fixture runs {changed}; before: {before}")

    def __repr__(self) -> str:
        return f"FixtureRuns({self.ids})"

    @property
    def suspended(self) -> list[str]:
        return [self.ids["order"], self.ids["review"]]

    @property
    def finished(self) -> list[str]:
        return [self.ids["done"], self.ids["canceled"]]


def start(workflow_id: str, run_id: str, data: Any) -> rr.StartRunRequest:
    return rr.StartRunRequest(workflow_id=workflow_id, run_id=run_id, input_data=value(data))


@pytest.fixture
async def bridge() -> Bridge:
    return Bridge(asyncio.get_running_loop())


@pytest.fixture
async def fixtures(stub: Stub) -> FixtureRuns:
    runs = FixtureRuns(stub)
    await runs.make()
    return runs


@pytest.fixture(params=SEEDS, ids=lambda seed: f"seed={seed}")
def fuzz_seed(request: pytest.FixtureRequest) -> int:
    return int(request.param)


async def assert_serving(stub: Stub, fixtures: FixtureRuns) -> None:
    """The server still answers, and the fixture runs are as they were."""
    listed = await stub.ListWorkflows(rr.ListWorkflowsRequest(), timeout=10)
    assert {"order-approval", "document-review"} <= {w.workflow_id for w in listed.workflows}
    assert await fixtures.changed() == []


def accepted_by_a_resume_schema(data: Any) -> bool:
    """Whether some fixture step would accept `data` as its resume data."""
    try:
        received = s.as_received(data)
    except ValueError:
        return False
    for schema in RESUME_SCHEMAS:
        try:
            schema.model_validate(received)
        except ValidationError:
            continue
        return True
    return False


# -- random and malformed field values, every RPC -----------------------------------------


def tracing_options(draw: st.DrawFn) -> message_pb2.TracingOptions:
    out = message_pb2.TracingOptions(
        request_context_keys=draw(st.lists(s.odd_text, max_size=2)),
        trace_id=draw(st.one_of(s.odd_text, st.text("0123456789abcdefABCDEF", max_size=40))),
        parent_span_id=draw(st.one_of(s.odd_text, st.text("0123456789abcdef", max_size=20))),
        tags=draw(st.lists(s.odd_text, max_size=2)),
    )
    if draw(st.booleans()):
        s.fill_struct(out.metadata, draw(s.json_objects))
    return out


def output_options(draw: st.DrawFn) -> message_pb2.OutputOptions:
    return message_pb2.OutputOptions(
        include_state=draw(st.booleans()), include_resume_labels=draw(st.booleans())
    )


def maybe_struct(draw: st.DrawFn, out: struct_pb2.Struct) -> None:
    if draw(st.booleans()):
        s.fill_struct(out, draw(s.json_objects))


def maybe_value(draw: st.DrawFn, out: struct_pb2.Value) -> Any:
    if draw(st.booleans()):
        data = draw(s.json_values())
        s.fill_value(out, data)
        return data
    return None


def timestamp(draw: st.DrawFn) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=draw(s.int64), nanos=draw(s.int32))


def random_request(draw: st.DrawFn, rpc: str, runs: FixtureRuns) -> pb_message.Message:
    """A request for `rpc` with random and malformed values. Calls that could rightly
    change a fixture run (cancel or delete a suspended one, time travel to a real step,
    a valid resume) only name run ids that are no fixture, or are made dry runs."""
    any_run = st.one_of(st.sampled_from(list(runs.ids.values())), s.odd_text)
    finished_or_other = st.one_of(st.sampled_from(runs.finished), s.odd_text)
    if rpc == "ListWorkflows":
        return rr.ListWorkflowsRequest(
            page_size=draw(s.int32),
            page_token=draw(st.one_of(s.odd_text, st.integers(-5, 10**6).map(str))),
        )
    if rpc == "GetWorkflow":
        return rr.GetWorkflowRequest(workflow_id=draw(s.workflow_id))
    if rpc == "CreateRun":
        return rr.CreateRunRequest(
            workflow_id=draw(s.workflow_id),
            run_id=draw(any_run),
            resource_id=draw(s.odd_text),
            request_id=draw(s.odd_text),
        )
    if rpc == "StartRun":
        start_request = rr.StartRunRequest(
            workflow_id=draw(s.workflow_id),
            run_id=draw(any_run),
            resource_id=draw(s.odd_text),
            tracing_options=tracing_options(draw),
            output_options=output_options(draw),
            request_id=draw(s.odd_text),
            return_immediately=draw(st.booleans()),
        )
        maybe_value(draw, start_request.input_data)
        maybe_struct(draw, start_request.initial_state)
        maybe_struct(draw, start_request.request_context)
        return start_request
    if rpc == "ResumeRun":
        resume = rr.ResumeRequest(
            run_id=draw(any_run),
            workflow_id=draw(st.one_of(st.just(""), s.workflow_id)),
            step=message_pb2.StepPath(segments=draw(s.step_segments)),
            label=draw(st.one_of(st.just(""), s.label)),
            retry_count=draw(s.int32),
            tracing_options=tracing_options(draw),
            output_options=output_options(draw),
            request_id=draw(st.one_of(st.just(""), s.odd_text)),
            validate_only=draw(st.booleans()),
        )
        data = maybe_value(draw, resume.resume_data)
        maybe_struct(draw, resume.request_context)
        if draw(st.booleans()):
            resume.foreach_index = draw(s.int32)
        if draw(st.booleans()):
            resume.expected_version = draw(s.int64)
        if resume.run_id in runs.ids.values() and accepted_by_a_resume_schema(data):
            resume.validate_only = True  # a valid resume of a fixture would rightly change it
        return resume
    if rpc == "CancelRun":
        return rr.CancelRunRequest(
            run_id=draw(finished_or_other), reason=draw(s.odd_text), request_id=draw(s.odd_text)
        )
    if rpc == "GetRun":
        return rr.GetRunRequest(run_id=draw(any_run), output_options=output_options(draw))
    if rpc == "ListRuns":
        listing = rr.ListRunsRequest(
            workflow_id=draw(st.one_of(st.just(""), s.workflow_id)),
            statuses=draw(s.run_status_ints),
            resource_id=draw(st.one_of(st.just(""), s.odd_text)),
            page_size=draw(s.int32),
            page_token=draw(st.one_of(st.just(""), s.odd_text)),
        )
        if draw(st.booleans()):
            listing.create_time_after.CopyFrom(timestamp(draw))
        if draw(st.booleans()):
            listing.create_time_before.CopyFrom(timestamp(draw))
        return listing
    if rpc == "WatchRun":
        return rr.WatchRunRequest(run_id=draw(any_run), after_sequence=draw(s.int64))
    if rpc == "RestartRun":
        restart = rr.RestartRunRequest(
            run_id=draw(any_run),
            tracing_options=tracing_options(draw),
            output_options=output_options(draw),
            request_id=draw(s.odd_text),
        )
        maybe_struct(draw, restart.request_context)
        return restart
    if rpc == "TimeTravelRun":
        segments = draw(s.step_segments)
        run_id = draw(any_run)
        if tuple(segments) in VALID_PATHS and run_id in runs.ids.values():
            run_id = f"no-such-{run_id}"
        travel = rr.TimeTravelRunRequest(
            run_id=run_id,
            step=message_pb2.StepPath(segments=segments),
            tracing_options=tracing_options(draw),
            output_options=output_options(draw),
            request_id=draw(s.odd_text),
        )
        maybe_value(draw, travel.input_data)
        maybe_value(draw, travel.resume_data)
        maybe_struct(draw, travel.initial_state)
        maybe_struct(draw, travel.request_context)
        return travel
    if rpc == "DeleteRun":
        return rr.DeleteRunRequest(run_id=draw(s.odd_text))
    raise AssertionError(rpc)


async def call_rpc(stub: Stub, rpc: str, request: pb_message.Message) -> Outcome:
    method = getattr(stub, rpc)
    if rpc == "WatchRun":
        # A suspended run's stream stays open: a short deadline ends it.
        return await stream_outcome(method(request, timeout=0.25))
    return await outcome(method(request, timeout=10))


async def test_random_field_values_in_every_rpc_get_a_clear_status_and_change_no_run(
    stub: Stub, fixtures: FixtureRuns, bridge: Bridge, fuzz_seed: int, request: Any
) -> None:
    """Random and malformed values in every field of every RPC (ids empty, very long,
    unicode, control characters; page sizes and indexes at the int32/int64 extremes;
    step paths with empty, dotted and item-marked segments; unknown enum values; NaN in
    Structs) get a clear status; the fixture runs never change; the server keeps serving."""

    @fuzz_settings(max_examples=70)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        rpc = data.draw(st.sampled_from(sorted(REQUESTS)), label="rpc")
        req = data.draw(st.composite(lambda draw: random_request(draw, rpc, fixtures))())
        note(f"{rpc}({_short(req)})")
        got = bridge.run(lambda: call_rpc(stub, rpc, req))
        note(f"-> {got.describe()}")
        assert_clear(got, rpc, allow_deadline=rpc == "WatchRun")
        bridge.run(lambda: fixtures.assert_unchanged(rpc))

    await run_seeded(check, fuzz_seed, request.node.nodeid)
    await assert_serving(stub, fixtures)


def _short(message: pb_message.Message, limit: int = 600) -> str:
    text = str(message).replace("\n", " ")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


LONG_ID_REQUESTS: dict[str, Callable[[str], pb_message.Message]] = {
    "GetWorkflow": lambda i: rr.GetWorkflowRequest(workflow_id=i),
    "GetRun": lambda i: rr.GetRunRequest(run_id=i),
    "CancelRun": lambda i: rr.CancelRunRequest(run_id=i),
    "ResumeRun": lambda i: rr.ResumeRequest(run_id=i),
    "RestartRun": lambda i: rr.RestartRunRequest(run_id=i),
    "WatchRun": lambda i: rr.WatchRunRequest(run_id=i),
    "DeleteRun": lambda i: rr.DeleteRunRequest(run_id=i),
    "CreateRun": lambda i: rr.CreateRunRequest(workflow_id=i),
    "StartRun": lambda i: rr.StartRunRequest(workflow_id=i),
}


@pytest.mark.parametrize("rpc", sorted(LONG_ID_REQUESTS))
async def test_an_error_about_a_very_long_id_keeps_its_status_code_and_details(
    stub: Stub, rpc: str
) -> None:
    """An unknown id of 20 000 characters is NOT_FOUND (or INVALID_ARGUMENT) with its
    ErrorInfo, like a short one. The status message and ErrorInfo metadata must not echo
    unbounded input: trailers above grpc's metadata limit (8 KiB) reach the caller as
    RESOURCE_EXHAUSTED, with details that disagree with the code."""
    got = await call_rpc(stub, rpc, LONG_ID_REQUESTS[rpc]("w" * 20_000))
    assert got.code in (Code.NOT_FOUND, Code.INVALID_ARGUMENT), got.describe()
    assert_clear(got, rpc)


# -- wrong types in resume data -----------------------------------------------------------

ABSENT = object()

approval_like = st.fixed_dictionaries(
    {
        "approved": st.one_of(
            st.booleans(), st.sampled_from(["yes", "no", "true", "0", "1", "on"]), s.json_values()
        ),
        "approver": st.one_of(st.text(max_size=4), s.json_values()),
    },
    optional={"note": st.one_of(st.text(max_size=4), s.json_values()), "x": s.json_values()},
)


async def test_resume_data_of_any_shape_is_refused_with_field_violations_unless_valid(
    stub: Stub, fixtures: FixtureRuns, bridge: Bridge, fuzz_seed: int, request: Any
) -> None:
    """Resume data of any JSON shape (NaN and infinities included, or none at all) for
    order-approval's approval step: OK exactly when the step's schema accepts the data as
    the server receives it, INVALID_ARGUMENT with BadRequest violations under resume_data
    otherwise, and a refused resume leaves the run exactly as it was. A resume that is no
    dry run and succeeds takes effect (the decision carries the approver)."""

    @fuzz_settings(max_examples=45)
    @given(
        data=st.one_of(approval_like, s.json_values(), st.just(ABSENT)),
        how=st.sampled_from(["step", "label", "neither"]),
        validate_only=st.booleans(),
    )
    def check(data: Any, how: str, validate_only: bool) -> None:
        run_id = fixtures.ids["order"]
        req = rr.ResumeRequest(run_id=run_id, validate_only=validate_only)
        if how == "step":
            req.step.segments.append("approval")
        elif how == "label":
            req.label = "manager"
        if data is not ABSENT:
            s.fill_value(req.resume_data, data)
        expected = expected_approval(data)
        note(f"as received: {expected!r}")
        before = bridge.run(lambda: stub.GetRun(rr.GetRunRequest(run_id=run_id)))
        got = bridge.run(lambda: outcome(stub.ResumeRun(req, timeout=10)))
        note(f"-> {got.describe()}")
        assert_clear(got, "ResumeRun")
        if expected is None:
            assert got.code == Code.INVALID_ARGUMENT, got.describe()
            assert got.error is not None
            assert got.error.reason in ("INVALID_RESUME_DATA", "INVALID_ARGUMENT")
            assert all(f.startswith("resume_data") for f in got.error.violations), got.error
            after = bridge.run(lambda: stub.GetRun(rr.GetRunRequest(run_id=run_id)))
            assert after == before
            return
        assert got.code == Code.OK, got.describe()
        if validate_only:
            assert got.response.status == enums_pb2.RUN_STATUS_SUSPENDED
            assert got.response.version == before.result.version
            bridge.run(lambda: fixtures.assert_unchanged("a dry-run resume"))
        else:
            assert got.response.status == enums_pb2.RUN_STATUS_SUCCESS
            decision = got.response.steps["approval"].output.struct_value
            assert decision.fields["approver"].string_value == expected.approver
            assert decision.fields["approved"].bool_value == expected.approved
            bridge.run(fixtures.make)  # the order fixture was rightly consumed

    await run_seeded(check, fuzz_seed, request.node.nodeid)
    await assert_serving(stub, fixtures)


def expected_approval(data: Any) -> Approval | None:
    """The Approval the step accepts for `data` as the server receives it, or None."""
    if data is ABSENT:
        return None
    try:
        return Approval.model_validate(s.as_received(data))
    except (ValueError, ValidationError):  # NaN / infinity, or refused by the schema
        return None


# -- unknown enum values ------------------------------------------------------------------


@pytest.mark.parametrize("status", [99, 8, -1, 0, 2**31 - 1, -(2**31)])
async def test_an_unknown_run_status_filter_is_invalid_argument(stub: Stub, status: int) -> None:
    """ListRuns with a RunStatus the API does not define (or UNSPECIFIED) is refused with
    a violation on `statuses`, alone or next to a valid one."""
    for statuses in ([status], [enums_pb2.RUN_STATUS_SUSPENDED, status]):
        got = await outcome(stub.ListRuns(rr.ListRunsRequest(statuses=statuses)))
        assert got.code == Code.INVALID_ARGUMENT, got.describe()
        assert got.error is not None and "statuses" in got.error.violations


# -- page tokens --------------------------------------------------------------------------


@dataclass
class Pages:
    resource_id: str
    token: str
    other_filter_token: str
    fingerprint: str


async def make_pages(stub: Stub) -> Pages:
    """Seven PENDING runs of one resource, and real page tokens for two different filters."""
    resource_id = f"fz-pages-{uuid.uuid4().hex[:8]}"
    for i in range(7):
        await stub.CreateRun(
            rr.CreateRunRequest(
                workflow_id="order-approval", run_id=f"{resource_id}-{i}", resource_id=resource_id
            )
        )
    first = await stub.ListRuns(rr.ListRunsRequest(resource_id=resource_id, page_size=2))
    other = await stub.ListRuns(rr.ListRunsRequest(workflow_id="order-approval", page_size=2))
    assert first.next_page_token and other.next_page_token
    decoded = json.loads(base64.urlsafe_b64decode(first.next_page_token + "=="))
    return Pages(resource_id, first.next_page_token, other.next_page_token, decoded["f"])


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@st.composite
def tampered_tokens(draw: st.DrawFn, pages: Pages) -> str:
    token = pages.token
    kind = draw(
        st.sampled_from(["flip", "cut", "append", "base64", "json", "other-filter", "text"])
    )
    if kind == "flip":
        i = draw(st.integers(0, len(token) - 1))
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.é\x00"
        return token[:i] + draw(st.sampled_from(alphabet)) + token[i + 1 :]
    if kind == "cut":
        return token[: draw(st.integers(1, len(token) - 1))]
    if kind == "append":
        return token + draw(st.text(max_size=6))
    if kind == "base64":
        return b64(draw(st.binary(max_size=80)))
    if kind == "json":
        cursor = {
            "t": draw(
                st.one_of(
                    st.floats(),
                    st.integers(-(10**400), 10**400),
                    st.sampled_from([10**400, -(10**400), 1e308]),
                    s.json_values(),
                )
            ),
            "r": draw(s.json_values()),
            "f": draw(st.one_of(st.just(pages.fingerprint), s.json_values())),
        }
        for key in draw(st.lists(st.sampled_from(["t", "r", "f"]), max_size=2)):
            cursor.pop(key, None)
        shape = draw(st.sampled_from(["object", "list", "scalar"]))
        obj: Any = cursor if shape == "object" else list(cursor.values()) if shape == "list" else 1
        return b64(json.dumps(obj).encode())
    if kind == "other-filter":
        return pages.other_filter_token
    return draw(s.odd_text)


async def test_tampered_page_tokens_are_invalid_argument_and_never_leak_other_runs(
    stub: Stub, fixtures: FixtureRuns, bridge: Bridge, fuzz_seed: int, request: Any
) -> None:
    """A real ListRuns page token with a byte flipped, cut short or extended, random base64,
    base64 of JSON cursors with odd values (huge integers, NaN, wrong types, missing keys,
    the right filter fingerprint), a token of other filters, or random text: OK (a
    tampered token can still decode to a cursor) or INVALID_ARGUMENT on page_token, never
    INTERNAL; and an OK page holds only runs matching the request's filters."""
    pages = await make_pages(stub)

    @fuzz_settings(max_examples=60)
    @given(token=tampered_tokens(pages), page_size=st.integers(0, 5))
    def check(token: str, page_size: int) -> None:
        req = rr.ListRunsRequest(
            resource_id=pages.resource_id, page_size=page_size, page_token=token
        )
        got = bridge.run(lambda: outcome(stub.ListRuns(req, timeout=10)))
        note(f"-> {got.describe()}")
        assert_clear(got, "ListRuns")
        assert got.code in (Code.OK, Code.INVALID_ARGUMENT), got.describe()
        if got.error is not None:
            assert "page_token" in got.error.violations, got.describe()
        else:
            assert {r.resource_id for r in got.response.runs} <= {pages.resource_id}

    await run_seeded(check, fuzz_seed, request.node.nodeid)
    await assert_serving(stub, fixtures)


async def test_a_page_token_of_other_filters_is_invalid_argument(stub: Stub) -> None:
    """A token is bound to the filters it was made for."""
    pages = await make_pages(stub)
    got = await outcome(
        stub.ListRuns(rr.ListRunsRequest(resource_id=pages.resource_id, page_token="x" * 3))
    )
    assert got.code == Code.INVALID_ARGUMENT
    got = await outcome(
        stub.ListRuns(
            rr.ListRunsRequest(resource_id=pages.resource_id, page_token=pages.other_filter_token)
        )
    )
    assert got.code == Code.INVALID_ARGUMENT, got.describe()
    assert got.error is not None and "page_token" in got.error.violations


@pytest.mark.parametrize("hostile", ["huge-integer-time", "deeply-nested-json"])
async def test_a_hostile_page_token_is_invalid_argument(stub: Stub, hostile: str) -> None:
    """A token that decodes but is hostile: a cursor time that is an integer too large for
    a float (float() raises OverflowError), or JSON nested 100 000 levels deep (json.loads
    raises RecursionError). Both are malformed tokens, not internal errors."""
    pages = await make_pages(stub)
    if hostile == "huge-integer-time":
        raw = json.dumps({"t": 10**400, "r": "x", "f": pages.fingerprint}).encode()
    else:
        raw = b"[" * 100_000
    req = rr.ListRunsRequest(resource_id=pages.resource_id, page_token=b64(raw))
    got = await outcome(stub.ListRuns(req))
    assert got.code == Code.INVALID_ARGUMENT, got.describe()
    assert got.error is not None and "page_token" in got.error.violations


@pytest.mark.parametrize(
    "token",
    ["abc", "-1", "1.5", " 1", "²", "¹⁰", "9" * 5000, "\x00", "1" + "\u0660"],
    ids=[
        "letters",
        "negative",
        "decimal",
        "space",
        "superscript",
        "superscripts",
        "5000-digits",
        "nul",
        "arabic-indic",
    ],
)
async def test_a_malformed_list_workflows_page_token_is_invalid_argument(
    stub: Stub, token: str
) -> None:
    """ListWorkflows' offset token: anything but a plain decimal offset is INVALID_ARGUMENT
    on page_token (or, for other Unicode decimal digits that int() reads, an OK page);
    never INTERNAL. Unicode digits that str.isdigit() accepts but int() does not (²) and
    offsets longer than int()'s 4300-digit limit are the traps."""
    got = await outcome(stub.ListWorkflows(rr.ListWorkflowsRequest(page_token=token)))
    assert_clear(got, "ListWorkflows")
    assert got.code in (Code.OK, Code.INVALID_ARGUMENT), got.describe()
    if got.error is not None:
        assert "page_token" in got.error.violations


@pytest.mark.parametrize(
    ("field_name", "seconds", "nanos"),
    [
        ("create_time_after", -(2**63), 0),
        ("create_time_before", 253_402_300_800, 0),
        ("create_time_after", 0, -1),
        ("create_time_before", 0, 10**9),
    ],
    ids=["int64-min", "after-year-9999", "negative-nanos", "nanos-overflow"],
)
async def test_an_out_of_range_timestamp_filter_is_invalid_argument(
    stub: Stub, field_name: str, seconds: int, nanos: int
) -> None:
    """A ListRuns time filter outside google.protobuf.Timestamp's range (years 0001-9999,
    nanos 0-999 999 999) is INVALID_ARGUMENT on that field: protobuf's ToNanoseconds()
    raises ValueError for it, which must not become INTERNAL."""
    req = rr.ListRunsRequest()
    getattr(req, field_name).CopyFrom(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
    got = await outcome(stub.ListRuns(req))
    assert got.code == Code.INVALID_ARGUMENT, got.describe()
    assert got.error is not None and any(f.startswith(field_name) for f in got.error.violations)


# -- NaN and infinities in Structs --------------------------------------------------------


def nan_struct() -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.fields["n"].number_value = float("nan")
    out.fields["i"].number_value = float("inf")
    return out


NAN_CASES: dict[str, Callable[[FixtureRuns], tuple[str, pb_message.Message, str]]] = {
    "start.request_context": lambda f: (
        "StartRun",
        rr.StartRunRequest(
            workflow_id="order-approval", input_data=value(ORDER), request_context=nan_struct()
        ),
        "request_context",
    ),
    "start.initial_state": lambda f: (
        "StartRun",
        rr.StartRunRequest(
            workflow_id="order-approval", input_data=value(ORDER), initial_state=nan_struct()
        ),
        "initial_state",
    ),
    "start.tracing_options.metadata": lambda f: (
        "StartRun",
        rr.StartRunRequest(
            workflow_id="order-approval",
            input_data=value(ORDER),
            tracing_options=message_pb2.TracingOptions(metadata=nan_struct()),
        ),
        "tracing_options.metadata",
    ),
    "resume.request_context": lambda f: (
        "ResumeRun",
        rr.ResumeRequest(
            run_id=f.ids["order"], resume_data=value(APPROVAL), request_context=nan_struct()
        ),
        "request_context",
    ),
    "resume.tracing_options.metadata": lambda f: (
        "ResumeRun",
        rr.ResumeRequest(
            run_id=f.ids["order"],
            resume_data=value(APPROVAL),
            tracing_options=message_pb2.TracingOptions(metadata=nan_struct()),
        ),
        "tracing_options.metadata",
    ),
    "restart.request_context": lambda f: (
        "RestartRun",
        rr.RestartRunRequest(run_id=f.ids["order"], request_context=nan_struct()),
        "request_context",
    ),
    "time_travel.initial_state": lambda f: (
        "TimeTravelRun",
        rr.TimeTravelRunRequest(
            run_id=f.ids["done"],
            step=message_pb2.StepPath(segments=["fulfil"]),
            initial_state=nan_struct(),
        ),
        "initial_state",
    ),
}


@pytest.mark.parametrize("case", sorted(NAN_CASES))
async def test_nan_or_infinity_in_a_struct_field_is_invalid_argument_and_changes_nothing(
    stub: Stub, fixtures: FixtureRuns, case: str
) -> None:
    """NaN and infinities cannot be JSON: in a Struct field (request context, initial
    state, tracing metadata) they are INVALID_ARGUMENT naming the field, as they already
    are in a Value field (input_data, resume_data); the run does not change."""
    rpc, req, field_name = NAN_CASES[case](fixtures)
    got = await call_rpc(stub, rpc, req)
    assert got.code == Code.INVALID_ARGUMENT, got.describe()
    assert got.error is not None
    assert any(f.startswith(field_name) for f in got.error.violations), got.describe()
    await assert_serving(stub, fixtures)


# -- time travel with resume data to no step -----------------------------------------------


@pytest.mark.parametrize("segments", [["no-such-step"], [], ["review", "nope"], ["fulfil", ""]])
async def test_time_travel_with_resume_data_to_no_such_step_is_invalid_argument(
    stub: Stub, fixtures: FixtureRuns, segments: list[str]
) -> None:
    """TimeTravelRun with resume_data names the step first: a path to no step is
    INVALID_ARGUMENT on `step` (as it is without resume data), not an internal error."""
    for run_id in (fixtures.ids["done"], fixtures.ids["order"]):
        got = await outcome(
            stub.TimeTravelRun(
                rr.TimeTravelRunRequest(
                    run_id=run_id,
                    step=message_pb2.StepPath(segments=segments),
                    resume_data=value(APPROVAL),
                )
            )
        )
        assert got.code == Code.INVALID_ARGUMENT, got.describe()
        assert got.error is not None and "step" in got.error.violations, got.describe()
    await assert_serving(stub, fixtures)


# -- invalid UTF-8, random bytes, deep nesting on the wire ---------------------------------


def raw_unary(channel: grpc.aio.Channel, rpc: str) -> Any:
    return channel.unary_unary(SERVICE + rpc, request_serializer=None, response_deserializer=None)


async def call_raw(channel: grpc.aio.Channel, rpc: str, payload: bytes) -> Outcome:
    if rpc == "WatchRun":
        call = channel.unary_stream(
            SERVICE + rpc, request_serializer=None, response_deserializer=None
        )
        return await stream_outcome(call(payload, timeout=0.25))
    return await outcome(raw_unary(channel, rpc)(payload, timeout=10))


def base_requests(runs: FixtureRuns) -> dict[str, bytes]:
    """One valid, harmless request per RPC: even mutated, none can change a fixture run
    (mutating calls name no fixture, or cannot become valid)."""
    order = runs.ids["order"]
    messages: dict[str, pb_message.Message] = {
        "ListWorkflows": rr.ListWorkflowsRequest(page_size=1),
        "GetWorkflow": rr.GetWorkflowRequest(workflow_id="order-approval"),
        "CreateRun": rr.CreateRunRequest(workflow_id="order-approval", run_id=order),
        "StartRun": start("order-approval", order, ORDER),
        "ResumeRun": rr.ResumeRequest(
            run_id=order, resume_data=value({"approved": True}), validate_only=True
        ),
        "CancelRun": rr.CancelRunRequest(run_id="fz-nope", reason="no"),
        "GetRun": rr.GetRunRequest(run_id=order),
        "ListRuns": rr.ListRunsRequest(
            workflow_id="order-approval", statuses=[3], page_size=2, page_token="abc"
        ),
        "WatchRun": rr.WatchRunRequest(run_id=runs.ids["done"], after_sequence=1),
        "RestartRun": rr.RestartRunRequest(run_id=order),
        "TimeTravelRun": rr.TimeTravelRunRequest(
            run_id="fz-nope", step=message_pb2.StepPath(segments=["approval"])
        ),
        "DeleteRun": rr.DeleteRunRequest(run_id="fz-nope"),
    }
    return {rpc: m.SerializeToString() for rpc, m in messages.items()}


@st.composite
def wire_payloads(draw: st.DrawFn, base: dict[str, bytes]) -> tuple[str, bytes]:
    rpc = draw(st.sampled_from(sorted(base)))
    valid = base[rpc]
    kind = draw(st.sampled_from(["random", "cut", "flip", "bad-utf8", "junk-tail"]))
    if kind == "random":
        return rpc, draw(st.binary(min_size=1, max_size=64))
    if kind == "cut":
        return rpc, valid[: draw(st.integers(0, max(0, len(valid) - 1)))]
    if kind == "flip":
        i = draw(st.integers(0, len(valid) - 1))
        return rpc, valid[:i] + bytes([valid[i] ^ draw(st.integers(1, 255))]) + valid[i + 1 :]
    if kind == "bad-utf8":
        # An extra occurrence of a string field (the last one wins) holding invalid UTF-8.
        number = {"ListWorkflows": 2, "ListRuns": 7, "ResumeRun": 5}.get(rpc, 1)
        return rpc, valid + s.length_delimited(number, draw(st.sampled_from(s.INVALID_UTF8)))
    return rpc, valid + draw(st.binary(min_size=1, max_size=16))


def decodable(rpc: str, payload: bytes) -> bool:
    try:
        REQUESTS[rpc].FromString(payload)
    except pb_message.DecodeError:
        return False
    return True


async def test_random_bytes_and_invalid_utf8_on_the_wire_get_a_clear_status(
    stub: Stub,
    channel: grpc.aio.Channel,
    fixtures: FixtureRuns,
    bridge: Bridge,
    fuzz_seed: int,
    request: Any,
) -> None:
    """Raw request bytes, bypassing the client's serializer: random bytes, valid requests
    cut short, with a byte flipped, with invalid UTF-8 in a string field, or with junk
    after them. A request protobuf cannot decode is INVALID_ARGUMENT (the caller sent
    garbage: not INTERNAL, and not grpc's UNKNOWN "Unexpected DecodeError"); one it can
    decode gets a clear status. No fixture run changes; the server keeps serving."""
    base = base_requests(fixtures)

    @fuzz_settings(max_examples=60)
    @given(wire_payloads(base))
    def check(case: tuple[str, bytes]) -> None:
        rpc, payload = case
        got = bridge.run(lambda: call_raw(channel, rpc, payload))
        note(f"{rpc} {payload!r} -> {got.describe()}")
        if not decodable(rpc, payload):
            assert got.code == Code.INVALID_ARGUMENT, f"undecodable {rpc}: {got.describe()}"
        else:
            assert_clear(got, rpc, allow_deadline=rpc == "WatchRun")
        bridge.run(lambda: fixtures.assert_unchanged(rpc))

    await run_seeded(check, fuzz_seed, request.node.nodeid)
    await assert_serving(stub, fixtures)


@pytest.mark.parametrize("bad", s.INVALID_UTF8[:4], ids=lambda b: b.hex())
async def test_invalid_utf8_in_a_run_id_is_invalid_argument(
    channel: grpc.aio.Channel, stub: Stub, fixtures: FixtureRuns, bad: bytes
) -> None:
    """proto3 strings are UTF-8: GetRun and ResumeRun whose run_id is not are refused as
    INVALID_ARGUMENT (today grpc answers UNKNOWN "Unexpected <class DecodeError>")."""
    for rpc, payload in (
        ("GetRun", s.length_delimited(1, bad)),
        ("ResumeRun", s.resume_request_bytes(bad, s.NUMBER_ONE)),
    ):
        got = await call_raw(channel, rpc, payload)
        assert got.code == Code.INVALID_ARGUMENT, f"{rpc}: {got.describe()}"
    await assert_serving(stub, fixtures)


@pytest.mark.parametrize("depth", [10, 30, 50, 200, 1000])
@pytest.mark.parametrize("shape", ["lists", "objects"])
async def test_deeply_nested_resume_data_gets_a_clear_status(
    channel: grpc.aio.Channel, stub: Stub, fixtures: FixtureRuns, depth: int, shape: str
) -> None:
    """Resume data nested `depth` levels deep (lists, or objects): protobuf's decoder stops
    at 100 message levels (a JSON list level is two: Value and ListValue; an object level
    three: Value, Struct and its map entry), so from about 49 levels of lists or 33 of
    objects the request cannot be decoded. Either way the answer is
    INVALID_ARGUMENT (the data is not an Approval, or cannot be read), never INTERNAL or
    UNKNOWN; the run does not change and the server keeps serving."""
    nested = s.nested_list_value(depth) if shape == "lists" else s.nested_struct_value(depth)
    for validate_only in (True, False):
        payload = s.resume_request_bytes(fixtures.ids["order"].encode(), nested, validate_only)
        got = await call_raw(channel, "ResumeRun", payload)
        assert got.code == Code.INVALID_ARGUMENT, got.describe()
    await assert_serving(stub, fixtures)


async def test_deeply_nested_data_inside_valid_resume_data_is_clear(
    channel: grpc.aio.Channel, stub: Stub, fixtures: FixtureRuns
) -> None:
    """A valid Approval with an extra key holding 30 nested lists is a valid dry run (the
    extra key is ignored); with 1000 nested lists it cannot be decoded: INVALID_ARGUMENT."""
    for depth, code in ((30, Code.OK), (1000, Code.INVALID_ARGUMENT)):
        entries = b"".join(
            s.length_delimited(1, s.length_delimited(1, key) + s.length_delimited(2, v))
            for key, v in (
                (b"approved", bytes([4 << 3]) + b"\x01"),
                (b"approver", s.length_delimited(3, b"maria")),
                (b"extra", s.nested_list_value(depth)),
            )
        )
        data = s.length_delimited(5, entries)
        payload = s.resume_request_bytes(fixtures.ids["order"].encode(), data, True)
        got = await call_raw(channel, "ResumeRun", payload)
        assert got.code == code, f"depth {depth}: {got.describe()}"
    await assert_serving(stub, fixtures)


# -- huge payloads, above and near the configured limit -----------------------------------

LIMIT = 64 * 1024


@pytest.fixture
async def small_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    running = await create_server(settings_for(tmp_path / "small.db", max_message_bytes=LIMIT))
    try:
        yield running
    finally:
        await running.stop(grace=1.0)


@pytest.fixture
async def small_stub(small_server: RunningServer) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_server.port}") as chan:
        yield Stub(chan)


@pytest.fixture
async def small_fixtures(small_stub: Stub) -> FixtureRuns:
    runs = FixtureRuns(small_stub)
    await runs.make()
    return runs


def oversized_request(field_name: str, size: int, runs: FixtureRuns) -> tuple[str, Any]:
    big = "x" * size
    order = runs.ids["order"]
    if field_name == "resume_data":
        return "ResumeRun", rr.ResumeRequest(
            run_id=order, resume_data=value({**APPROVAL, "note": big})
        )
    if field_name == "request_context":
        return "ResumeRun", rr.ResumeRequest(
            run_id=order,
            resume_data=value(APPROVAL),
            request_context=value({"b": big}).struct_value,
        )
    if field_name == "label":
        return "ResumeRun", rr.ResumeRequest(run_id=order, label=big, resume_data=value(APPROVAL))
    if field_name == "step":
        return "ResumeRun", rr.ResumeRequest(
            run_id=order, step=message_pb2.StepPath(segments=[big]), resume_data=value(APPROVAL)
        )
    if field_name == "input_data":
        return "StartRun", start("order-approval", "", {**ORDER, "order_id": big})
    if field_name == "resource_id":
        return "CreateRun", rr.CreateRunRequest(workflow_id="order-approval", resource_id=big)
    if field_name == "run_id":
        return "GetRun", rr.GetRunRequest(run_id=big)
    return "ListRuns", rr.ListRunsRequest(page_token=big)


async def test_requests_above_the_message_limit_are_refused_and_change_nothing(
    small_stub: Stub, small_fixtures: FixtureRuns, bridge: Bridge, fuzz_seed: int, request: Any
) -> None:
    """With max_message_bytes = 64 KiB, a request above it (in resume data, request
    context, a label, a step segment, input data, a resource id, a run id or a page
    token) is RESOURCE_EXHAUSTED or INVALID_ARGUMENT, nothing changes, and the server
    keeps serving."""
    fields = [
        "resume_data",
        "request_context",
        "label",
        "step",
        "input_data",
        "resource_id",
        "run_id",
        "page_token",
    ]

    @fuzz_settings(max_examples=10)
    @given(field_name=st.sampled_from(fields), size=st.integers(LIMIT + 1, 16 * LIMIT))
    def check(field_name: str, size: int) -> None:
        rpc, req = oversized_request(field_name, size, small_fixtures)
        got = bridge.run(lambda: call_rpc(small_stub, rpc, req))
        note(f"{rpc} {field_name} {size} -> {got.describe()}")
        assert got.code in (Code.RESOURCE_EXHAUSTED, Code.INVALID_ARGUMENT), got.describe()
        bridge.run(lambda: small_fixtures.assert_unchanged(rpc))

    await run_seeded(check, fuzz_seed, request.node.nodeid)
    await assert_serving(small_stub, small_fixtures)


async def test_a_start_whose_answer_would_exceed_the_limit_is_refused_before_a_run_exists(
    small_stub: Stub, small_fixtures: FixtureRuns
) -> None:
    """A StartRun below the limit whose answer would be above it (the input comes back in
    the result several times: input, step payloads and outputs, suspend payload) must not
    leave an unreadable run behind a RESOURCE_EXHAUSTED: either it is refused before any
    run exists, or it answers OK; and every stored run can be read with GetRun."""
    resource_id = f"fz-big-{uuid.uuid4().hex[:8]}"
    req = start("order-approval", f"{resource_id}-run", {**ORDER, "order_id": "o" * (LIMIT // 2)})
    req.resource_id = resource_id
    assert req.ByteSize() < LIMIT
    got = await outcome(small_stub.StartRun(req))
    listed = await small_stub.ListRuns(rr.ListRunsRequest(resource_id=resource_id))
    if got.code != Code.OK:
        assert got.code in (Code.RESOURCE_EXHAUSTED, Code.INVALID_ARGUMENT), got.describe()
        assert list(listed.runs) == [], (
            f"StartRun answered {got.describe()} but created run(s) "
            f"{[(r.run_id, enums_pb2.RunStatus.Name(r.status)) for r in listed.runs]}"
        )
    for run in listed.runs:
        read = await outcome(small_stub.GetRun(rr.GetRunRequest(run_id=run.run_id)))
        assert read.code == Code.OK, f"GetRun of a stored run: {read.describe()}"
    await assert_serving(small_stub, small_fixtures)


async def test_a_resume_whose_answer_would_exceed_the_limit_is_refused_or_acknowledged(
    small_stub: Stub, small_fixtures: FixtureRuns
) -> None:
    """A ResumeRun below the limit whose answer would be above it (a long note comes back
    as resume payload and step output) must not take effect behind a RESOURCE_EXHAUSTED
    (the caller would believe the resume lost): either it is refused and the run stays
    exactly as it was, or it answers OK."""
    run_id = small_fixtures.ids["order"]
    before = await small_stub.GetRun(rr.GetRunRequest(run_id=run_id))
    req = rr.ResumeRequest(
        run_id=run_id, resume_data=value({**APPROVAL, "note": "n" * (LIMIT // 3)})
    )
    assert req.ByteSize() < LIMIT
    got = await outcome(small_stub.ResumeRun(req))
    if got.code != Code.OK:
        assert got.code in (Code.RESOURCE_EXHAUSTED, Code.INVALID_ARGUMENT), got.describe()
        after = await outcome(small_stub.GetRun(rr.GetRunRequest(run_id=run_id)))
        assert after.code == Code.OK, f"the run can no longer be read: {after.describe()}"
        assert after.response == before, (
            f"ResumeRun answered {got.describe()} but the run moved on to "
            f"{enums_pb2.RunStatus.Name(after.response.status)}"
        )
