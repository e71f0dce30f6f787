"""Tracing of DESIGN.md §6 / issue 4, through a real grpc.aio server and a real client.

Spans go to an in-memory exporter on a fresh TracerProvider, metrics to an in-memory reader
on a fresh MeterProvider, both handed to `create_server`. The client sends its span as W3C
`traceparent` metadata (or ids in `tracing_options`); the tests assert span names, parents,
trace ids, links and attributes. The last test runs a real `waystation serve` process with
`OTEL_TRACES_EXPORTER=console` and reads the printed spans.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import settings_for
from tests.support.api import assert_eventually, call_error, path, struct, value
from tests.support.faulty_store import FaultyStore
from tests.support.server_process import ServerProcess, free_port
from tests.support.tracing import (
    Caller,
    children_of,
    console_spans,
    counter_total,
    metric_points,
    names_in_trace,
    one_span,
    span_hex,
    spans_named,
)
from waystation.api.v1 import enums_pb2, message_pb2
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub
from waystation.engine import StartCommand
from waystation.engine.model import RunRecord
from waystation.engine.tracing import CallTrace, Telemetry, TracingOptions
from waystation.storage import SqliteStore
from waystation.telemetry import SHUTDOWN_SECONDS, TraceIdFilter, providers_from_env
from waystation.transport import RunningServer, create_server

SUSPENDED = enums_pb2.RUN_STATUS_SUSPENDED
SUCCESS = enums_pb2.RUN_STATUS_SUCCESS
FAILED = enums_pb2.RUN_STATUS_FAILED
ORDER = {"order_id": "o-1", "amount": 250.0}
APPROVAL = {"approved": True, "approver": "maria"}
START_RPC = "/waystation.v1.WorkflowService/StartRun"
RESUME_RPC = "/waystation.v1.WorkflowService/ResumeRun"
START_ORDER = "waystation.start order-approval"
RESUME_ORDER = "waystation.resume order-approval"


@dataclass
class Traced:
    """A server whose spans and metrics are kept in memory, and a stub talking to it."""

    server: RunningServer
    stub: WorkflowServiceStub
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader


@pytest.fixture
async def traced(db_path: Path) -> AsyncIterator[Traced]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metrics])
    running = await create_server(
        settings_for(db_path), tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Traced(running, WorkflowServiceStub(channel), spans, metrics)
    finally:
        await running.stop(grace=1.0)
        tracer_provider.shutdown()
        meter_provider.shutdown()


# -- helpers ------------------------------------------------------------------------------


def new_run_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def start_order(
    stub: WorkflowServiceStub, caller: Caller | None = None, **request: Any
) -> message_pb2.WorkflowResult:
    """Start `order-approval` (validate -> approval (suspends) -> fulfil)."""
    result = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="order-approval",
            run_id=new_run_id("order"),
            input_data=value(ORDER),
            **request,
        ),
        metadata=caller.metadata if caller else None,
    )
    assert result.status == SUSPENDED
    return result


async def resume_order(
    stub: WorkflowServiceStub, run_id: str, caller: Caller | None = None, **request: Any
) -> message_pb2.WorkflowResult:
    result = await stub.ResumeRun(
        rr.ResumeRequest(run_id=run_id, resume_data=value(APPROVAL), **request),
        metadata=caller.metadata if caller else None,
    )
    assert result.status == SUCCESS
    return result


def parent_id(span: ReadableSpan) -> int:
    assert span.parent is not None, f"span {span.name!r} has no parent"
    return span.parent.span_id


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def step_spans(traced: Traced, run_span: ReadableSpan) -> dict[str, ReadableSpan]:
    """The step spans under a run span, by step path (each path attempted once)."""
    steps = [s for s in children_of(traced.spans, run_span) if s.name.startswith("waystation.")]
    by_path = {str(s.attributes["waystation.step.path"]): s for s in steps}  # type: ignore[index]
    assert len(by_path) == len(steps), [s.name for s in steps]
    return by_path


# -- the caller's trace ---------------------------------------------------------------------


async def test_start_run_spans_continue_the_callers_traceparent(traced: Traced) -> None:
    caller = Caller.new()
    result = await start_order(traced.stub, caller)

    rpc = one_span(traced.spans, START_RPC)
    assert rpc.kind is SpanKind.SERVER
    assert ids(rpc)[0] == caller.trace_id
    assert parent_id(rpc) == caller.span_id
    assert rpc.parent is not None and rpc.parent.is_remote

    run = one_span(traced.spans, START_ORDER)
    assert ids(run)[0] == caller.trace_id
    assert parent_id(run) == ids(rpc)[1]
    assert run.attributes is not None
    assert run.attributes["waystation.run_id"] == result.run_id
    assert run.attributes["waystation.workflow_id"] == "order-approval"
    assert run.attributes["waystation.status"] == "suspended"

    steps = step_spans(traced, run)
    assert set(steps) == {"validate", "approval"}
    assert steps["validate"].name == "waystation.step validate"
    assert steps["approval"].name == "waystation.step approval"
    for step_path, step in steps.items():
        assert ids(step)[0] == caller.trace_id
        assert step.attributes is not None
        assert step.attributes["waystation.run_id"] == result.run_id
        assert step.attributes["waystation.workflow_id"] == "order-approval"
        assert step.attributes["waystation.step.path"] == step_path
        assert step.attributes["waystation.step.attempt"] == 0
    assert steps["validate"].attributes["waystation.status"] == "success"  # type: ignore[index]
    assert steps["approval"].attributes["waystation.status"] == "suspended"  # type: ignore[index]

    # Every span of the call is in the caller's trace.
    assert {ids(s)[0] for s in traced.spans.get_finished_spans()} == {caller.trace_id}
    assert (result.trace_id, result.span_id) == span_hex(run)
    assert result.trace_id == caller.trace_hex


async def test_resume_run_spans_continue_the_callers_traceparent(traced: Traced) -> None:
    started = await start_order(traced.stub, Caller.new())
    caller = Caller.new()
    result = await resume_order(traced.stub, started.run_id, caller)

    rpc = one_span(traced.spans, RESUME_RPC)
    assert ids(rpc)[0] == caller.trace_id
    assert parent_id(rpc) == caller.span_id
    run = one_span(traced.spans, RESUME_ORDER)
    assert ids(run)[0] == caller.trace_id
    assert parent_id(run) == ids(rpc)[1]
    assert run.attributes is not None
    assert run.attributes["waystation.status"] == "success"
    steps = step_spans(traced, run)
    assert set(steps) == {"approval", "fulfil"}
    assert all(ids(step)[0] == caller.trace_id for step in steps.values())
    assert (result.trace_id, result.span_id) == span_hex(run)
    assert result.trace_id == caller.trace_hex


async def test_without_trace_context_the_run_span_is_a_child_of_a_new_server_span(
    traced: Traced,
) -> None:
    result = await start_order(traced.stub)
    rpc = one_span(traced.spans, START_RPC)
    assert rpc.parent is None
    run = one_span(traced.spans, START_ORDER)
    assert ids(run)[0] == ids(rpc)[0]
    assert parent_id(run) == ids(rpc)[1]
    assert (result.trace_id, result.span_id) == span_hex(run)
    assert len(result.trace_id) == 32 and int(result.trace_id, 16) != 0


# -- tracing_options.trace_id / parent_span_id ---------------------------------------------

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


async def test_tracing_options_place_the_run_span_without_metadata(traced: Traced) -> None:
    options = message_pb2.TracingOptions(trace_id=TRACE, parent_span_id=PARENT)
    result = await start_order(traced.stub, tracing_options=options)

    run = one_span(traced.spans, START_ORDER)
    assert ids(run)[0] == int(TRACE, 16)
    assert parent_id(run) == int(PARENT, 16)
    assert run.parent is not None and run.parent.is_remote
    steps = step_spans(traced, run)
    assert set(steps) == {"validate", "approval"}
    assert all(ids(step)[0] == int(TRACE, 16) for step in steps.values())
    assert (result.trace_id, result.span_id) == (TRACE, span_hex(run)[1])


async def test_tracing_options_place_the_resume_run_span_without_metadata(
    traced: Traced,
) -> None:
    started = await start_order(traced.stub)
    options = message_pb2.TracingOptions(trace_id=TRACE, parent_span_id=PARENT)
    result = await resume_order(traced.stub, started.run_id, tracing_options=options)
    run = one_span(traced.spans, RESUME_ORDER)
    assert ids(run)[0] == int(TRACE, 16)
    assert parent_id(run) == int(PARENT, 16)
    assert result.trace_id == TRACE


async def test_short_tracing_option_ids_are_left_padded(traced: Traced) -> None:
    options = message_pb2.TracingOptions(trace_id="abc", parent_span_id="12")
    result = await start_order(traced.stub, tracing_options=options)
    run = one_span(traced.spans, START_ORDER)
    assert ids(run)[0] == 0xABC
    assert parent_id(run) == 0x12
    assert result.trace_id == "0" * 29 + "abc"


async def test_tracing_options_trace_id_alone_makes_the_run_span_that_traces_root(
    traced: Traced,
) -> None:
    options = message_pb2.TracingOptions(trace_id=TRACE)
    result = await start_order(traced.stub, tracing_options=options)
    run = one_span(traced.spans, START_ORDER)
    assert ids(run)[0] == int(TRACE, 16)
    assert run.parent is None  # a root: no made-up parent for trace viewers to miss
    steps = step_spans(traced, run)
    assert set(steps) == {"validate", "approval"}
    assert all(ids(step)[0] == int(TRACE, 16) for step in steps.values())
    assert (result.trace_id, result.span_id) == (TRACE, span_hex(run)[1])

    # The choice is this call's only: the next call without options gets a trace of its own.
    await start_order(traced.stub)
    other = spans_named(traced.spans, START_ORDER)[-1]
    assert ids(other)[0] != int(TRACE, 16)


def test_a_tracer_that_cannot_choose_trace_ids_joins_the_trace_through_a_made_up_parent() -> None:
    # An embedder's provider that is not the SDK's (here the API's no-op one) has no id
    # generator to ask: the run span still joins the chosen trace, under a remote parent.
    telemetry = Telemetry(tracer_provider=trace.NoOpTracerProvider())
    options = TracingOptions(trace_id=TRACE)
    call = CallTrace(options, options.parent(), options.root_trace_id())
    span = telemetry.start_run_span("start", RunRecord("r-1", "w"), call, {})
    assert span.get_span_context().trace_id == int(TRACE, 16)


async def test_parent_span_id_without_trace_id_is_invalid_argument(traced: Traced) -> None:
    run_id = new_run_id("order")
    error = await call_error(
        traced.stub.StartRun(
            rr.StartRunRequest(
                workflow_id="order-approval",
                run_id=run_id,
                input_data=value(ORDER),
                tracing_options=message_pb2.TracingOptions(parent_span_id=PARENT),
            )
        )
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "tracing_options.trace_id" in error.violations
    # Nothing was started.
    assert not spans_named(traced.spans, START_ORDER)
    missing = await call_error(traced.stub.GetRun(rr.GetRunRequest(run_id=run_id)))
    assert missing.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("trace_id", "parent_span_id", "field"),
    [
        ("not-hex", "", "tracing_options.trace_id"),
        ("4bf92f3577b34da6a3ce929d0e0e4736ff", "", "tracing_options.trace_id"),
        ("0" * 32, "", "tracing_options.trace_id"),
        (TRACE, "xyz", "tracing_options.parent_span_id"),
        (TRACE, "00f067aa0ba902b7a", "tracing_options.parent_span_id"),
        (TRACE, "0000", "tracing_options.parent_span_id"),
    ],
    ids=["non-hex", "33-chars", "all-zero", "span-non-hex", "span-17-chars", "span-all-zero"],
)
async def test_malformed_tracing_option_ids_are_invalid_argument_naming_the_field(
    traced: Traced, trace_id: str, parent_span_id: str, field: str
) -> None:
    options = message_pb2.TracingOptions(trace_id=trace_id, parent_span_id=parent_span_id)
    error = await call_error(
        traced.stub.StartRun(
            rr.StartRunRequest(
                workflow_id="order-approval",
                run_id=new_run_id("order"),
                input_data=value(ORDER),
                tracing_options=options,
            )
        )
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.violations, error.violations


async def test_malformed_tracing_option_ids_on_resume_leave_the_run_suspended(
    traced: Traced,
) -> None:
    started = await start_order(traced.stub)
    options = message_pb2.TracingOptions(trace_id="g" * 32)
    error = await call_error(
        traced.stub.ResumeRun(
            rr.ResumeRequest(
                run_id=started.run_id, resume_data=value(APPROVAL), tracing_options=options
            )
        )
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "tracing_options.trace_id" in error.violations
    run = await traced.stub.GetRun(rr.GetRunRequest(run_id=started.run_id))
    assert run.status == SUSPENDED
    assert not spans_named(traced.spans, RESUME_ORDER)


async def test_traceparent_metadata_wins_over_tracing_options(traced: Traced) -> None:
    caller = Caller.new()
    options = message_pb2.TracingOptions(trace_id=TRACE, parent_span_id=PARENT)
    result = await start_order(traced.stub, caller, tracing_options=options)
    rpc = one_span(traced.spans, START_RPC)
    run = one_span(traced.spans, START_ORDER)
    assert ids(run)[0] == caller.trace_id
    assert parent_id(run) == ids(rpc)[1]
    assert result.trace_id == caller.trace_hex


# -- attributes -----------------------------------------------------------------------------


async def test_tags_metadata_and_request_context_keys_become_run_span_attributes(
    traced: Traced,
) -> None:
    options = message_pb2.TracingOptions(
        tags=["checkout", "eu"],
        metadata=struct({"customer": "acme", "amount": 7, "extra": {"region": "eu", "tier": 2}}),
        request_context_keys=["user.id", "user.missing", "tenant"],
    )
    result = await start_order(
        traced.stub,
        Caller.new(),
        tracing_options=options,
        resource_id="tenant-9",
        request_context=struct({"user": {"id": "u-7", "role": "buyer"}, "tenant": "t-1"}),
    )
    run = one_span(traced.spans, START_ORDER)
    attributes = dict(run.attributes or {})
    assert attributes["waystation.run_id"] == result.run_id
    assert attributes["waystation.workflow_id"] == "order-approval"
    assert tuple(attributes["waystation.tags"]) == ("checkout", "eu")  # type: ignore[arg-type]
    assert attributes["waystation.metadata.customer"] == "acme"
    assert attributes["waystation.metadata.amount"] == 7
    # A nested object is written as compact JSON text.
    nested = attributes["waystation.metadata.extra"]
    assert isinstance(nested, str)
    assert json.loads(nested) == {"region": "eu", "tier": 2}
    assert attributes["waystation.request_context.user.id"] == "u-7"
    assert attributes["waystation.request_context.tenant"] == "t-1"
    # A key the request context lacks is left out, and unchosen keys are not copied.
    assert "waystation.request_context.user.missing" not in attributes
    assert "waystation.request_context.user.role" not in attributes
    assert "waystation.request_context.user" not in attributes


async def test_resume_tracing_options_read_the_stored_request_context(traced: Traced) -> None:
    started = await start_order(
        traced.stub, request_context=struct({"user": {"id": "u-7"}, "tenant": "t-1"})
    )
    options = message_pb2.TracingOptions(
        tags=["approval"],
        metadata=struct({"approver": "maria"}),
        request_context_keys=["user.id", "tenant"],
    )
    await resume_order(
        traced.stub,
        started.run_id,
        tracing_options=options,
        request_context=struct({"tenant": "t-2"}),
    )
    run = one_span(traced.spans, RESUME_ORDER)
    attributes = dict(run.attributes or {})
    assert tuple(attributes["waystation.tags"]) == ("approval",)  # type: ignore[arg-type]
    assert attributes["waystation.metadata.approver"] == "maria"
    assert attributes["waystation.request_context.user.id"] == "u-7"
    assert attributes["waystation.request_context.tenant"] == "t-2"  # the resume's value wins
    # The start's options are not carried over to the resume, nor the other way round.
    start = one_span(traced.spans, START_ORDER)
    assert "waystation.tags" not in (start.attributes or {})


# -- links from the resume to the suspension ------------------------------------------------


async def test_resume_run_span_links_to_the_suspending_run_span(traced: Traced) -> None:
    caller = Caller.new()
    started = await start_order(traced.stub, caller)
    await resume_order(traced.stub, started.run_id, caller)

    start = one_span(traced.spans, START_ORDER)
    resume = one_span(traced.spans, RESUME_ORDER)
    assert ids(resume)[0] == caller.trace_id
    assert parent_id(resume) == ids(one_span(traced.spans, RESUME_RPC))[1]
    assert len(resume.links) == 1
    link = resume.links[0]
    assert (link.context.trace_id, link.context.span_id) == ids(start)
    assert (started.trace_id, started.span_id) == span_hex(start)
    assert not start.links


async def test_resume_in_another_trace_links_back_to_the_suspending_trace(
    traced: Traced,
) -> None:
    requester, approver = Caller.new("request"), Caller.new("approve")
    started = await start_order(traced.stub, requester)
    resumed = await resume_order(traced.stub, started.run_id, approver)

    start = one_span(traced.spans, START_ORDER)
    resume = one_span(traced.spans, RESUME_ORDER)
    assert ids(start)[0] == requester.trace_id
    assert ids(resume)[0] == approver.trace_id
    assert [(lk.context.trace_id, lk.context.span_id) for lk in resume.links] == [ids(start)]
    assert resumed.trace_id == approver.trace_hex
    assert resumed.span_id == span_hex(resume)[1]


async def test_each_resume_links_to_the_execution_that_suspended_last(
    traced: Traced, tmp_path: Path
) -> None:
    run_id = new_run_id("nested")
    start = await traced.stub.StartRun(
        rr.StartRunRequest(
            workflow_id="nested-counted",
            run_id=run_id,
            input_data=value({"log": str(tmp_path / "nested.log")}),
        ),
        metadata=Caller.new().metadata,
    )
    assert start.status == SUSPENDED
    first = await traced.stub.ResumeRun(
        rr.ResumeRequest(run_id=run_id, step=path("inner", "a"), resume_data=value({"ok": True})),
        metadata=Caller.new().metadata,
    )
    assert first.status == SUSPENDED
    second = await traced.stub.ResumeRun(
        rr.ResumeRequest(run_id=run_id, step=path("inner", "b"), resume_data=value({"n": 3})),
        metadata=Caller.new().metadata,
    )
    assert second.status == SUCCESS

    start_span = one_span(traced.spans, "waystation.start nested-counted")
    resumes = spans_named(traced.spans, "waystation.resume nested-counted")
    assert len(resumes) == 2
    assert [(lk.context.trace_id, lk.context.span_id) for lk in resumes[0].links] == [
        ids(start_span)
    ]
    assert [(lk.context.trace_id, lk.context.span_id) for lk in resumes[1].links] == [
        ids(resumes[0])
    ]


# -- failures, retries, nesting ---------------------------------------------------------------


async def test_failing_step_records_the_exception_on_every_attempt(traced: Traced) -> None:
    caller = Caller.new()
    result = await traced.stub.StartRun(
        rr.StartRunRequest(workflow_id="fails", run_id=new_run_id("fails")),
        metadata=caller.metadata,
    )
    assert result.status == FAILED

    run = one_span(traced.spans, "waystation.start fails")
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes is not None
    assert run.attributes["waystation.status"] == "failed"
    assert (result.trace_id, result.span_id) == span_hex(run)

    attempts = spans_named(traced.spans, "waystation.step explode")
    assert [s.attributes["waystation.step.attempt"] for s in attempts] == [0, 1, 2]  # type: ignore[index]
    for number, attempt in enumerate(attempts):
        assert parent_id(attempt) == ids(run)[1]
        assert ids(attempt)[0] == caller.trace_id
        assert attempt.status.status_code is StatusCode.ERROR
        assert attempt.attributes is not None
        assert attempt.attributes["waystation.status"] == "failed"
        assert attempt.attributes["waystation.step.path"] == "explode"
        exceptions = [e for e in attempt.events if e.name == "exception"]
        assert len(exceptions) == 1
        assert exceptions[0].attributes is not None
        assert exceptions[0].attributes["exception.type"] == "ValueError"
        assert exceptions[0].attributes["exception.message"] == f"boom on attempt {number}"


async def test_nested_workflow_step_spans_carry_dotted_paths(
    traced: Traced, tmp_path: Path
) -> None:
    run_id = new_run_id("nested")
    log = str(tmp_path / "nested.log")
    caller = Caller.new()
    started = await traced.stub.StartRun(
        rr.StartRunRequest(
            workflow_id="nested-counted", run_id=run_id, input_data=value({"log": log})
        ),
        metadata=caller.metadata,
    )
    assert started.status == SUSPENDED
    run = one_span(traced.spans, "waystation.start nested-counted")
    steps = step_spans(traced, run)
    assert set(steps) == {"first", "inner.a"}
    assert steps["inner.a"].name == "waystation.step inner.a"
    assert steps["inner.a"].attributes["waystation.status"] == "suspended"  # type: ignore[index]

    await traced.stub.ResumeRun(
        rr.ResumeRequest(run_id=run_id, step=path("inner", "a"), resume_data=value({"ok": True})),
        metadata=caller.metadata,
    )
    await traced.stub.ResumeRun(
        rr.ResumeRequest(run_id=run_id, step=path("inner", "b"), resume_data=value({"n": 3})),
        metadata=caller.metadata,
    )
    first, second = spans_named(traced.spans, "waystation.resume nested-counted")
    assert set(step_spans(traced, first)) == {"inner.a", "inner.b"}
    assert set(step_spans(traced, second)) == {"inner.b", "last"}
    assert {ids(s)[0] for s in traced.spans.get_finished_spans()} == {caller.trace_id}


# -- metrics ----------------------------------------------------------------------------------


async def test_start_and_resume_record_run_counters_and_histograms(traced: Traced) -> None:
    started = await start_order(traced.stub, Caller.new())
    await resume_order(traced.stub, started.run_id, Caller.new())

    points = metric_points(traced.metrics)
    assert counter_total(points["waystation.runs.started"]) == 1
    assert counter_total(points["waystation.runs.resumed"]) == 1
    settled = points["waystation.runs.settled"]
    assert counter_total(settled, **{"waystation.status": "suspended"}) == 1
    assert counter_total(settled, **{"waystation.status": "success"}) == 1
    assert counter_total(settled) == 2
    # validate, approval (suspends); approval, fulfil
    durations = points["waystation.step.duration"]
    assert sum(point.count for point in durations) == 4
    assert all(point.sum >= 0 for point in durations)
    latency = points["waystation.resume.latency"]
    assert sum(point.count for point in latency) == 1
    assert latency[0].sum > 0


async def test_a_start_that_loses_its_insert_is_not_counted_and_ends_its_span_in_error(
    traced: Traced,
) -> None:
    """Of two starts with one request_id accepted in one turn of the loop, the one whose
    insert (written with its first step's RUNNING record) finds the key taken ends its run
    span as `already_exists`, an error, and is not counted as a started run; both callers get
    the winner's run, counted once."""
    engine = traced.server.engine
    command = StartCommand("order-approval", input_data=ORDER, request_id="one-insert")

    first, second = await asyncio.gather(engine.start_run(command), engine.start_run(command))

    assert first.run_id == second.run_id
    lost = [
        span
        for span in traced.spans.get_finished_spans()
        if (span.attributes or {}).get("waystation.status") == "already_exists"
    ]
    assert len(lost) == 1
    assert lost[0].status.status_code is StatusCode.ERROR
    assert (lost[0].attributes or {}).get("waystation.run_id") != first.run_id
    points = metric_points(traced.metrics)
    assert counter_total(points["waystation.runs.started"]) == 1


async def test_failed_run_is_counted_as_settled_failed(traced: Traced) -> None:
    result = await traced.stub.StartRun(
        rr.StartRunRequest(workflow_id="fails", run_id=new_run_id("fails"))
    )
    assert result.status == FAILED
    points = metric_points(traced.metrics)
    assert counter_total(points["waystation.runs.settled"], **{"waystation.status": "failed"}) == 1
    assert sum(point.count for point in points["waystation.step.duration"]) == 3


# -- logs ----------------------------------------------------------------------------------------


async def test_log_lines_written_in_a_step_carry_the_callers_trace_id(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(TraceIdFilter())
    caplog.set_level(logging.INFO, logger="waystation")
    caller = Caller.new()
    await traced.stub.StartRun(
        rr.StartRunRequest(workflow_id="fails", run_id=new_run_id("fails")),
        metadata=caller.metadata,
    )
    failed = [r for r in caplog.records if r.getMessage().startswith("step explode of run")]
    assert len(failed) == 3, [r.getMessage() for r in caplog.records]
    attempts = spans_named(traced.spans, "waystation.step explode")
    assert [(r.trace_id, r.span_id) for r in failed] == [span_hex(s) for s in attempts]  # type: ignore[attr-defined]
    assert {r.trace_id for r in failed} == {caller.trace_hex}  # type: ignore[attr-defined]


def test_trace_id_filter_marks_records_outside_a_span() -> None:
    record = logging.LogRecord("waystation", logging.INFO, __file__, 1, "idle", None, None)
    assert TraceIdFilter().filter(record)
    assert (record.trace_id, record.span_id) == ("-", "-")  # type: ignore[attr-defined]
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        inside = logging.LogRecord("waystation", logging.INFO, __file__, 1, "busy", None, None)
        TraceIdFilter().filter(inside)
        context = span.get_span_context()
    assert inside.trace_id == trace.format_trace_id(context.trace_id)  # type: ignore[attr-defined]
    assert inside.span_id == trace.format_span_id(context.span_id)  # type: ignore[attr-defined]


# -- configuration by OTEL_* variables ------------------------------------------------------

OTEL_VARIABLES = ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_SERVICE_NAME")


async def test_without_otel_variables_results_still_carry_the_callers_trace(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    running = await create_server(settings_for(db_path))  # providers from the environment
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            caller = Caller.new()
            result = await start_order(WorkflowServiceStub(channel), caller)
    finally:
        await running.stop(grace=1.0)
    assert result.trace_id == caller.trace_hex
    assert len(result.span_id) == 16


def test_an_unknown_traces_exporter_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "carrier-pigeon")
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER"):
        providers_from_env()


@pytest.mark.parametrize(
    ("variables", "name"),
    [
        ({}, "waystation"),
        ({"OTEL_SERVICE_NAME": "billing-flows"}, "billing-flows"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=orders-flows,env=prod"}, "orders-flows"),
    ],
    ids=["default", "service-name", "resource-attributes"],
)
def test_the_service_name_comes_from_either_variable(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], name: str
) -> None:
    """As the OpenTelemetry specification says: OTEL_SERVICE_NAME, else the service.name of
    OTEL_RESOURCE_ATTRIBUTES (it was overwritten with "waystation"), else "waystation"."""
    for variable in (*OTEL_VARIABLES, "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    for variable, setting in variables.items():
        monkeypatch.setenv(variable, setting)
    providers = providers_from_env()
    try:
        assert providers.tracer_provider.resource.attributes["service.name"] == name
    finally:
        providers.shutdown()


@pytest.mark.parametrize("timeout", [0.2, 1.2, 2.5])
async def test_a_call_out_of_time_ends_its_server_span_deadline_exceeded(
    traced: Traced, tmp_path: Path, timeout: float
) -> None:
    """A deadline that expires while the handler waits is the server's DEADLINE_EXCEEDED
    (code 4, an ERROR), not CANCELLED (a client that went away): an alert on server span
    errors sees timeouts. Above a second too, where the client's deadline passes some
    milliseconds before the server's (grpc rounds a timeout up as it sends it) and its
    cancel arrives first: an outside audit found those spans CANCELLED."""
    log = str(tmp_path / "slow.log")
    request = rr.StartRunRequest(
        workflow_id="slow", input_data=value({"log": log, "seconds": timeout + 1.0})
    )
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await traced.stub.StartRun(request, timeout=timeout)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    async def ended() -> bool:
        return bool(spans_named(traced.spans, START_RPC))

    await assert_eventually(ended)
    span = one_span(traced.spans, START_RPC)
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert span.status.status_code is StatusCode.ERROR


async def test_latency_histograms_have_bounds_in_seconds(traced: Traced) -> None:
    """Step durations and resume latencies are seconds, and a step of a millisecond lands
    in a bucket of its own, not with every latency under 5 s (the SDK's default bounds are
    for milliseconds)."""
    started = await start_order(traced.stub)
    await resume_order(traced.stub, started.run_id)
    points = metric_points(traced.metrics)
    for name in ("waystation.step.duration", "waystation.resume.latency"):
        for point in points[name]:
            bounds = list(point.explicit_bounds)
            assert bounds[:2] == [0.0005, 0.001], (name, bounds)
            under_a_second = sum(point.bucket_counts[: bounds.index(1) + 1])
            assert under_a_second == point.count, (name, bounds, point.bucket_counts)


def test_a_collector_that_is_down_does_not_hold_a_stopping_server(tmp_path: Path) -> None:
    """With OTLP exporters whose collector is down, a server told to stop exits within
    its grace and the couple of seconds it gives the exporters (it took 14-28 s, past a
    Kubernetes terminationGracePeriodSeconds set as docs/deployment.md says)."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": nowhere,
    }
    with ServerProcess(tmp_path / "down.db", env=env, extra_args=["--grace", "1"]) as server:

        async def calls() -> None:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = WorkflowServiceStub(channel)
                for _ in range(3):
                    started = await start_order(stub)
                    await resume_order(stub, started.run_id)

        asyncio.run(calls())
        began = time.monotonic()
        assert server.stop(timeout=30) == 0
        took = time.monotonic() - began
    assert took < 1 + SHUTDOWN_SECONDS + 3, took
    assert "telemetry not flushed" in server.log


# -- console exporter, end to end ------------------------------------------------------------


def test_console_exporter_prints_start_and_resume_spans_in_the_callers_trace(
    tmp_path: Path,
) -> None:
    trace_hex = uuid.uuid4().hex
    start_caller = Caller.of(trace_hex, "00f067aa0ba902b7")
    resume_caller = Caller.of(trace_hex, "00f067aa0ba902b8")
    env = {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "waystation-console-test",
    }
    run_id = new_run_id("order")
    workflows = ["waystation.examples", "tests.support.workflows"]
    with ServerProcess(tmp_path / "console.db", workflows=workflows, env=env) as server:
        with grpc.insecure_channel(server.address) as channel:
            stub = WorkflowServiceStub(channel)
            started = stub.StartRun(
                rr.StartRunRequest(
                    workflow_id="order-approval", run_id=run_id, input_data=value(ORDER)
                ),
                metadata=start_caller.metadata,
                timeout=20,
            )
            assert started.status == SUSPENDED
            resumed = stub.ResumeRun(
                rr.ResumeRequest(run_id=run_id, resume_data=value(APPROVAL)),
                metadata=resume_caller.metadata,
                timeout=20,
            )
            assert resumed.status == SUCCESS
            failed = stub.StartRun(
                rr.StartRunRequest(workflow_id="fails", run_id=new_run_id("fails")),
                metadata=start_caller.metadata,
                timeout=20,
            )
            assert failed.status == FAILED
        assert server.stop() == 0
        output = server.log

    assert started.trace_id == resumed.trace_id == trace_hex
    spans = console_spans(output)
    names = names_in_trace(spans, trace_hex)
    for name in (START_RPC, START_ORDER, RESUME_RPC, RESUME_ORDER):
        assert name in names, f"{name!r} not printed in trace {trace_hex}:\n{output[-4000:]}"
    assert "waystation.step approval" in names and "waystation.step fulfil" in names
    by_name = {span["name"]: span for span in spans}
    assert by_name[START_RPC]["parent_id"] == "0x00f067aa0ba902b7"
    assert by_name[RESUME_RPC]["parent_id"] == "0x00f067aa0ba902b8"
    assert by_name[RESUME_ORDER]["links"][0]["context"]["span_id"] == f"0x{started.span_id}"
    # The server's log lines carry the trace and span ids of the step they were written in.
    attempts = [span for span in spans if span["name"] == "waystation.step explode"]
    assert len(attempts) == 3
    for attempt in attempts:
        span_id = attempt["context"]["span_id"].removeprefix("0x")
        expected = f"trace_id={trace_hex} span_id={span_id} step explode of run"
        assert expected in output, output[-4000:]
    assert by_name[START_ORDER]["resource"]["attributes"]["service.name"] == (
        "waystation-console-test"
    )


# -- more call kinds, persistence, trace state ---------------------------------------------


async def test_start_with_return_immediately_names_the_trace_it_joined(traced: Traced) -> None:
    """DESIGN §6: `WorkflowResult.trace_id` is the trace the call joined, also when the call
    returns before the run settles."""
    caller = Caller.new()
    result = await traced.stub.StartRun(
        rr.StartRunRequest(
            workflow_id="order-approval",
            run_id=new_run_id("order"),
            input_data=value(ORDER),
            return_immediately=True,
        ),
        metadata=caller.metadata,
    )

    async def run_span_ended() -> bool:
        return bool(spans_named(traced.spans, START_ORDER))

    await assert_eventually(run_span_ended)
    run = one_span(traced.spans, START_ORDER)
    assert ids(run)[0] == caller.trace_id
    assert result.trace_id == caller.trace_hex
    assert result.span_id == span_hex(run)[1]


async def test_time_travel_run_span_continues_the_callers_trace(traced: Traced) -> None:
    started = await start_order(traced.stub)
    await resume_order(traced.stub, started.run_id)
    caller = Caller.new()
    result = await traced.stub.TimeTravelRun(
        rr.TimeTravelRunRequest(run_id=started.run_id, step=path("validate")),
        metadata=caller.metadata,
    )
    run = one_span(traced.spans, "waystation.time_travel order-approval")
    rpc = one_span(traced.spans, "/waystation.v1.WorkflowService/TimeTravelRun")
    assert ids(run)[0] == caller.trace_id
    assert parent_id(run) == ids(rpc)[1]
    assert (result.trace_id, result.span_id) == span_hex(run)
    assert set(step_spans(traced, run)) == {"validate", "approval"}


async def test_tracestate_of_the_caller_is_kept_on_the_run_span(traced: Traced) -> None:
    caller = Caller.new()
    metadata = (*caller.metadata, ("tracestate", "vendor=abc"))
    await traced.stub.StartRun(
        rr.StartRunRequest(
            workflow_id="order-approval", run_id=new_run_id("order"), input_data=value(ORDER)
        ),
        metadata=metadata,
    )
    run = one_span(traced.spans, START_ORDER)
    assert run.context is not None
    assert run.context.trace_state.get("vendor") == "abc"


@pytest.mark.parametrize(
    "traceparent",
    ["00-" + "0" * 32 + "-" + "0" * 16 + "-01", "garbage"],
    ids=["all-zero-ids", "malformed"],
)
async def test_invalid_traceparent_leaves_the_tracing_options_in_charge(
    traced: Traced, traceparent: str
) -> None:
    """An invalid traceparent is no trace context (the propagator drops it), so the ids of
    `tracing_options` place the run, as they do when the metadata has none."""
    options = message_pb2.TracingOptions(trace_id=TRACE, parent_span_id=PARENT)
    result = await start_order(
        traced.stub, Caller(0, 0, (("traceparent", traceparent),)), tracing_options=options
    )
    rpc = one_span(traced.spans, START_RPC)
    assert rpc.parent is None  # the server span could not continue anything
    run = one_span(traced.spans, START_ORDER)
    assert ids(run)[0] == int(TRACE, 16)
    assert parent_id(run) == int(PARENT, 16)
    assert result.trace_id == TRACE


async def test_suspend_context_survives_a_server_restart(db_path: Path) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider()
    requester, approver = Caller.new(), Caller.new()
    try:
        first = await create_server(settings_for(db_path), tracer_provider, meter_provider)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
                started = await start_order(WorkflowServiceStub(channel), requester)
        finally:
            await first.stop(grace=1.0)
        second = await create_server(settings_for(db_path), tracer_provider, meter_provider)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
                await resume_order(WorkflowServiceStub(channel), started.run_id, approver)
        finally:
            await second.stop(grace=1.0)
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
    start = one_span(spans, START_ORDER)
    resume = one_span(spans, RESUME_ORDER)
    assert ids(resume)[0] == approver.trace_id
    assert [(lk.context.trace_id, lk.context.span_id) for lk in resume.links] == [ids(start)]


# -- the server span's outcome ------------------------------------------------------------


async def test_server_spans_record_the_status_each_call_ended_with(traced: Traced) -> None:
    """The server span of a call carries its gRPC status code, standard rpc.* attributes,
    and an ERROR status only for the codes that are the server's fault: a refused request
    or an unknown run is the caller's, and leaves the span's status unset."""
    started = await start_order(traced.stub)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await traced.stub.GetRun(rr.GetRunRequest(run_id="no-such-run"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await traced.stub.ResumeRun(rr.ResumeRequest(run_id=started.run_id))  # no data
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    get_rpc = "/waystation.v1.WorkflowService/GetRun"

    async def refused_spans_ended() -> bool:
        # A refused call's status reaches the client before its server span has ended.
        return all(spans_named(traced.spans, name) for name in (get_rpc, RESUME_RPC))

    await assert_eventually(refused_spans_ended)
    start = one_span(traced.spans, START_RPC)
    get = one_span(traced.spans, get_rpc)
    resume = one_span(traced.spans, RESUME_RPC)
    for span, code in ((start, 0), (get, 5), (resume, 3)):
        assert span.kind is SpanKind.SERVER
        assert span.attributes is not None
        assert span.attributes["rpc.system"] == "grpc"
        assert span.attributes["rpc.service"] == "waystation.v1.WorkflowService"
        assert span.attributes["rpc.method"] == span.name.rsplit("/", 1)[1]
        assert span.attributes["rpc.grpc.status_code"] == code
        assert span.status.status_code is StatusCode.UNSET


async def test_a_watch_stream_runs_in_its_server_span(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    """WatchRun, a server stream, gets its server span too, continuing the caller's trace,
    and it ends when the stream does; a client that cancels the stream is not an error in
    the server's log (the span's context is not left attached across the stream's yields,
    where OpenTelemetry could not detach it)."""
    caplog.set_level(logging.WARNING)
    started = await start_order(traced.stub)
    caller = Caller.new()
    stream = traced.stub.WatchRun(
        rr.WatchRunRequest(run_id=started.run_id), metadata=caller.metadata
    )
    first = await stream.read()
    assert first.sequence >= 1
    stream.cancel()
    watch_name = "/waystation.v1.WorkflowService/WatchRun"
    for _ in range(100):  # the span ends when the server sees the cancellation
        if spans_named(traced.spans, watch_name):
            break
        await asyncio.sleep(0.01)
    watch = one_span(traced.spans, watch_name)
    assert watch.kind is SpanKind.SERVER
    assert ids(watch)[0] == caller.trace_id
    assert parent_id(watch) == caller.span_id
    assert watch.attributes is not None
    assert watch.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_server_error_marks_its_server_span_as_an_error(db_path: Path) -> None:
    """A call that fails on the server's side (the store refuses the write: UNAVAILABLE)
    ends its server span with that code and an ERROR status."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    store = FaultyStore(SqliteStore(str(db_path)))
    running = await create_server(
        settings_for(db_path), tracer_provider, MeterProvider(), store=store
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            store.fail_writes(count=-1)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await start_order(WorkflowServiceStub(channel))
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        store.clear()
        await running.stop(grace=1.0)
        tracer_provider.shutdown()
    rpc = one_span(spans, START_RPC)
    assert rpc.attributes is not None
    assert rpc.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert rpc.status.status_code is StatusCode.ERROR
