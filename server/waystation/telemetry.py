"""OpenTelemetry for the server process, configured by the standard `OTEL_*` variables.

Nothing is needed to run: without `OTEL_TRACES_EXPORTER`, spans are not recorded (the sampler
drops them all), but every span still gets its ids, so results carry trace ids and the
caller's W3C context is continued; without `OTEL_METRICS_EXPORTER`, instruments are no-ops.
Recording what nobody reads cost about a sixth of a cycle's CPU (docs/performance.md).
- `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER`: `console`, `otlp` or `none` (comma lists).
- `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` (default) or `http/protobuf`; the endpoint, headers
  and the rest are read by the OTLP exporters themselves (`OTEL_EXPORTER_OTLP_*`).
- `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource (default service name
  "waystation").
Log records get `trace_id` and `span_id` of the span they were written in.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

SHUTDOWN_SECONDS = 2.0
"""How long a stopping server waits for its spans and metrics to be exported."""

LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s trace_id=%(trace_id)s span_id=%(span_id)s %(message)s"
)


@dataclass
class Providers:
    tracer_provider: TracerProvider
    meter_provider: metrics.MeterProvider
    """The SDK's, or the API's no-op one when no metrics exporter is configured."""

    def shutdown(self, timeout: float = SHUTDOWN_SECONDS) -> None:
        """Flush and stop the exporters, waiting at most `timeout` seconds: an exporter
        whose collector is down retries for longer than a drain may take, so what is not
        flushed by then is dropped (with a warning) rather than hold the process."""
        worker = threading.Thread(target=self._shutdown, name="otel-shutdown", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            logging.getLogger(__name__).warning(
                "telemetry not flushed within %.0f s (is the collector down?): dropped", timeout
            )

    def _shutdown(self) -> None:
        self.tracer_provider.shutdown()
        if isinstance(self.meter_provider, MeterProvider):
            self.meter_provider.shutdown()


def _names(variable: str) -> list[str]:
    value = os.environ.get(variable, "none")
    return [name.strip().lower() for name in value.split(",") if name.strip()]


def _otlp_protocol() -> str:
    return os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").strip().lower()


def _span_exporter(name: str) -> SpanExporter | None:
    if name == "console":
        return ConsoleSpanExporter(out=sys.stdout)
    if name == "otlp":
        if _otlp_protocol().startswith("http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter()
    if name == "none":
        return None
    raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r}")


def _metric_reader(name: str) -> PeriodicExportingMetricReader | None:
    exporter: Any
    if name == "console":
        exporter = ConsoleMetricExporter(out=sys.stdout)
    elif name == "otlp":
        if _otlp_protocol().startswith("http"):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )

            exporter = OTLPMetricExporter()
        else:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcMetricExporter,
            )

            exporter = GrpcMetricExporter()
    elif name == "none":
        return None
    else:
        raise ValueError(f"OTEL_METRICS_EXPORTER: unknown exporter {name!r}")
    return PeriodicExportingMetricReader(exporter)


def providers_from_env() -> Providers:
    """Tracer and meter providers as the `OTEL_*` variables say."""
    resource = Resource.create()  # OTEL_SERVICE_NAME, else OTEL_RESOURCE_ATTRIBUTES' service.name
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "waystation"}))
    exporters = [
        (name, exporter)
        for name in _names("OTEL_TRACES_EXPORTER")
        if (exporter := _span_exporter(name)) is not None
    ]
    # With no exporter nothing is recorded, but spans still get (and propagate) their ids.
    # shutdown_on_exit=False: Providers.shutdown, bounded in time, is the only one (the
    # SDK's own, at interpreter exit, waits for exporters without limit).
    tracer_provider = (
        TracerProvider(resource=resource, shutdown_on_exit=False)
        if exporters
        else TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    )
    for name, exporter in exporters:
        # Console spans are printed as they end; remote exporters are batched.
        processor = (
            SimpleSpanProcessor(exporter) if name == "console" else BatchSpanProcessor(exporter)
        )
        tracer_provider.add_span_processor(processor)
    readers = [r for r in map(_metric_reader, _names("OTEL_METRICS_EXPORTER")) if r]
    meter_provider: metrics.MeterProvider = (
        MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
        if readers
        else metrics.NoOpMeterProvider()
    )
    return Providers(tracer_provider, meter_provider)


class TraceIdFilter(logging.Filter):
    """Adds the current span's `trace_id` and `span_id` to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        valid = context.is_valid
        record.trace_id = trace.format_trace_id(context.trace_id) if valid else "-"
        record.span_id = trace.format_span_id(context.span_id) if valid else "-"
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(TraceIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
