"""Spans and metrics of runs and steps (DESIGN.md §6), on the OpenTelemetry API only.

Each StartRun / ResumeRun (and restart, time travel, recovery) executes under a run span:
a child of the caller's span (the gRPC server span continues the caller's W3C trace
context), or, when the call carried no trace context, of the `tracing_options.trace_id` /
`parent_span_id` it gave. Each step attempt is a child span of the run span. The trace
context of a run span is stored with the run when it settles, so a later resume's run span
links back to the span that suspended. A `trace_id` given alone makes the run span the root
of that trace (as Mastra's `tracingOptions.traceId` does), where the tracer can choose a root
span's trace id (the SDK's tracers); elsewhere its parent is a remote span made up for the
purpose, so that the run still joins the trace.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags

from waystation.engine.errors import InvalidArgument, Violations, exception_text
from waystation.engine.model import RunRecord

PREFIX = "waystation"


@dataclass
class TracingOptions:
    """What a caller asks of the tracing of one call (the API's TracingOptions)."""

    metadata: dict[str, Any] = field(default_factory=dict)
    request_context_keys: list[str] = field(default_factory=list)
    trace_id: str = ""
    parent_span_id: str = ""
    tags: list[str] = field(default_factory=list)

    def root_trace_id(self) -> int:
        """The trace id a run span that is the root of its trace takes: `trace_id` when it
        is given without `parent_span_id` (0 otherwise; `parent` checks the ids)."""
        return int(self.trace_id, 16) if self.trace_id and not self.parent_span_id else 0

    def parent(self) -> Context | None:
        """A remote parent made of `trace_id` / `parent_span_id`, or None without them (with
        `trace_id` alone, a made-up parent span in that trace: see `Telemetry`)."""
        if not self.trace_id and not self.parent_span_id:
            return None
        problems = Violations()
        trace_id = 0
        if self.trace_id:
            trace_id = problems.check(
                _hex_id, "tracing_options.trace_id", self.trace_id, 32, default=0
            )
        else:
            problems.add("tracing_options.trace_id", "required with parent_span_id")
        span_id = (
            problems.check(
                _hex_id, "tracing_options.parent_span_id", self.parent_span_id, 16, default=0
            )
            if self.parent_span_id
            else int.from_bytes(secrets.token_bytes(8), "big") or 1
        )
        problems.raise_any()
        remote = SpanContext(
            trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(remote))


def _hex_id(name: str, text: str, width: int) -> int:
    if not 1 <= len(text) <= width or any(c not in string.hexdigits for c in text):
        raise InvalidArgument(name, f"must be 1-{width} hexadecimal characters")
    value = int(text, 16)
    if value == 0:
        raise InvalidArgument(name, "must not be all zeros")
    return value


@dataclass
class CallTrace:
    """The tracing of one call: its options and the parent its run span takes (None: the
    current context, i.e. the gRPC server span)."""

    options: TracingOptions = field(default_factory=TracingOptions)
    parent: Context | None = None
    root_trace_id: int = 0
    """Set with `parent`: the run span may instead be the root of this trace."""


_CHOSEN_TRACE_ID: ContextVar[int] = ContextVar("waystation_chosen_trace_id", default=0)


class _ChosenTraceIds:
    """An SDK tracer's id generator that gives a root span the trace id its caller chose
    (`_CHOSEN_TRACE_ID`, set around the span's start) and otherwise asks the generator it
    wraps. Duck-typed: the engine depends on the OpenTelemetry API only."""

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped

    def generate_span_id(self) -> int:
        return int(self._wrapped.generate_span_id())

    def generate_trace_id(self) -> int:
        return _CHOSEN_TRACE_ID.get() or int(self._wrapped.generate_trace_id())

    def is_trace_id_random(self) -> bool:
        """W3C's random flag: never for a chosen id."""
        random = getattr(self._wrapped, "is_trace_id_random", None)
        return not _CHOSEN_TRACE_ID.get() and bool(random and random())

    def __getattr__(self, name: str) -> Any:  # what later SDKs ask of a generator
        return getattr(self._wrapped, name)


def _attribute(value: Any) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


def _dig(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def ids_of(span: trace.Span) -> dict[str, str]:
    """The hex trace and span id of `span`, or {} when it is not recording a real trace."""
    context = span.get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
    }


SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300
)  # fmt: skip
"""Histogram bounds for durations in seconds (the SDK's default bounds, 0 to 10,000, are
meant for milliseconds: every latency under 5 s fell in one bucket)."""


class Telemetry:
    """The engine's tracer and instruments, from the given providers (global by default)."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer("waystation.engine", tracer_provider=tracer_provider)
        generator = getattr(self.tracer, "id_generator", None)
        self._chooses_trace_ids = generator is not None
        if generator is not None:  # the SDK's tracer: this one only, not its provider's others
            self.tracer.id_generator = _ChosenTraceIds(generator)  # type: ignore[attr-defined]
        meter = metrics.get_meter("waystation.engine", meter_provider=meter_provider)
        self.runs_started = meter.create_counter(
            f"{PREFIX}.runs.started", description="Runs started (StartRun)"
        )
        self.runs_resumed = meter.create_counter(
            f"{PREFIX}.runs.resumed", description="Suspensions resumed (ResumeRun claims)"
        )
        self.runs_settled = meter.create_counter(
            f"{PREFIX}.runs.settled", description="Executions settled, by run status"
        )
        self.step_duration = meter.create_histogram(
            f"{PREFIX}.step.duration",
            unit="s",
            description="Duration of one step attempt",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.resume_latency = meter.create_histogram(
            f"{PREFIX}.resume.latency",
            unit="s",
            description="ResumeRun, call to settle",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )

    def start_run_span(
        self, kind: str, run: RunRecord, call: CallTrace | None, link_to: dict[str, str]
    ) -> trace.Span:
        """Start the span of one execution of `run` (its caller ends it), as a child of the
        call's parent or of the current span."""
        options = call.options if call else TracingOptions()
        attributes: dict[str, Any] = {
            f"{PREFIX}.run_id": run.run_id,
            f"{PREFIX}.workflow_id": run.workflow_id,
            f"{PREFIX}.call": kind,
        }
        if run.resource_id:
            attributes[f"{PREFIX}.resource_id"] = run.resource_id
        if options.tags:
            attributes[f"{PREFIX}.tags"] = list(options.tags)
        for key, value in options.metadata.items():
            attributes[f"{PREFIX}.metadata.{key}"] = _attribute(value)
        for dotted in options.request_context_keys:
            value = _dig(run.request_context, dotted)
            if value is not None:
                attributes[f"{PREFIX}.request_context.{dotted}"] = _attribute(value)
        links = []
        if link_to.get("trace_id") and link_to.get("span_id"):
            suspended = SpanContext(
                int(link_to["trace_id"], 16),
                int(link_to["span_id"], 16),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
            links.append(Link(suspended, {f"{PREFIX}.link": "suspended"}))
        parent = call.parent if call else None
        root_trace_id = call.root_trace_id if call and self._chooses_trace_ids else 0
        chosen = _CHOSEN_TRACE_ID.set(root_trace_id)
        try:
            return self.tracer.start_span(
                f"{PREFIX}.{kind} {run.workflow_id}",
                context=Context() if root_trace_id else parent,
                attributes=attributes,
                links=links,
                record_exception=False,
                set_status_on_exception=False,
            )
        finally:
            _CHOSEN_TRACE_ID.reset(chosen)

    @contextmanager
    def step_span(
        self, path: str, run: RunRecord, attempt: int, run_span: trace.Span | None = None
    ) -> Iterator[trace.Span]:
        """The span of one attempt of one step; when the run's span is not recorded (no
        exporter, or a caller's trace that is not sampled), its children would not be
        either, and the step runs in the run span instead of paying for one."""
        if run_span is not None and not run_span.is_recording():
            yield run_span
            return
        with self.tracer.start_as_current_span(
            f"{PREFIX}.step {path}",
            attributes={
                f"{PREFIX}.run_id": run.run_id,
                f"{PREFIX}.workflow_id": run.workflow_id,
                f"{PREFIX}.step.path": path,
                f"{PREFIX}.step.attempt": attempt,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span


def finish(span: trace.Span, status: str, error: BaseException | str | None = None) -> None:
    """Record how a run or step span ended."""
    span.set_attribute(f"{PREFIX}.status", status)
    if isinstance(error, BaseException):
        with suppress(Exception):  # a user's exception whose __str__ raises
            span.record_exception(error)
        error = exception_text(error)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
