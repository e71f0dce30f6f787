"""Helpers for tracing tests: a caller's span as W3C `traceparent` metadata, finding spans
in an in-memory exporter, reading metric points, and parsing the JSON spans that
`ConsoleSpanExporter` prints.

    caller = Caller.new()                       # a real span of a client-side provider
    await stub.StartRun(request, metadata=caller.metadata)
    run = one_span(exporter, "waystation.start order-approval")
    assert run.context.trace_id == caller.trace_id
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

# The client's spans are never exported: only its ids travel, in the metadata.
_CLIENT = TracerProvider()


@dataclass(frozen=True)
class Caller:
    """A client's span, and the `traceparent` metadata that carries it over gRPC."""

    trace_id: int
    span_id: int
    metadata: tuple[tuple[str, str], ...]

    @classmethod
    def new(cls, name: str = "caller") -> Caller:
        """A fresh client span in a fresh trace, injected with the W3C propagator."""
        span = _CLIENT.get_tracer("tests.caller").start_span(name)
        span.end()
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
        context = span.get_span_context()
        return cls(context.trace_id, context.span_id, tuple(sorted(carrier.items())))

    @classmethod
    def of(cls, trace_id: str, span_id: str) -> Caller:
        """grpcurl-style: `traceparent: 00-<trace>-<span>-01` written by hand."""
        header = f"00-{trace_id}-{span_id}-01"
        return cls(int(trace_id, 16), int(span_id, 16), (("traceparent", header),))

    @property
    def trace_hex(self) -> str:
        return trace.format_trace_id(self.trace_id)


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    """The finished spans called `name`, in the order they ended."""
    return [span for span in exporter.get_finished_spans() if span.name == name]


def one_span(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    """The only finished span called `name`."""
    found = spans_named(exporter, name)
    names = [span.name for span in exporter.get_finished_spans()]
    assert len(found) == 1, f"expected one span {name!r}, found {len(found)} among {names}"
    return found[0]


def children_of(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    """The finished spans whose parent is `parent`, in the order they ended."""
    assert parent.context is not None
    return [
        span
        for span in exporter.get_finished_spans()
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


def span_hex(span: ReadableSpan) -> tuple[str, str]:
    """The hex trace id and span id of a finished span."""
    assert span.context is not None
    return trace.format_trace_id(span.context.trace_id), trace.format_span_id(span.context.span_id)


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """The data points of every metric the reader collects now, by metric name."""
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def counter_total(points: Iterable[Any], **attributes: str) -> int:
    """The sum of the counter points whose attributes include `attributes`."""
    return sum(
        int(point.value)
        for point in points
        if all(point.attributes.get(key) == value for key, value in attributes.items())
    )


def console_spans(output: str) -> list[dict[str, Any]]:
    """The span JSON objects printed by ConsoleSpanExporter (each starts with `{` at the
    start of a line), read out of output that mixes them with log lines."""
    decoder = json.JSONDecoder()
    spans: list[dict[str, Any]] = []
    position = 0
    while (start := output.find("{", position)) != -1:
        if start > 0 and output[start - 1] != "\n":
            position = start + 1
            continue
        try:
            found, end = decoder.raw_decode(output, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        if isinstance(found, dict) and "context" in found and "name" in found:
            spans.append(found)
        position = end
    return spans


def names_in_trace(spans: Sequence[dict[str, Any]], trace_id: str) -> list[str]:
    """The names of the printed spans whose `context.trace_id` is `0x<trace_id>`."""
    return [span["name"] for span in spans if span["context"]["trace_id"] == f"0x{trace_id}"]
