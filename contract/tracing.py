"""Traces (OpenTelemetry), switched on by the standard variables:

- `OTEL_TRACES_EXPORTER`: `otlp` (OTLP over HTTP, to `OTEL_EXPORTER_OTLP_ENDPOINT` or
  `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `console` (one JSON object per span and line on stdout), a
  comma-separated list of them, or `none`; unset: no traces.
- `OTEL_SERVICE_NAME` (default `fcl-streams`, `fcl-trainer`, ...), `OTEL_RESOURCE_ATTRIBUTES`,
  `OTEL_SDK_DISABLED=true` (off whatever else is set), and the SDK's other `OTEL_*` variables.

One trace follows a threshold event: `fcl streams` opens an `fcl.admit` span for it (a child of the
producer's span when the record carries a W3C `traceparent` header) and stores that span's context
with the job (`training_jobs.trace_context`); `fcl trainer` continues it with `fcl.job` (the claimed
attempt) and its `fcl.train` (the training child: fit and validation) and `fcl.record` (the version,
its checks and its events) spans; every event the job publishes (status, validation, model
versions) carries the job's `traceparent` in its Kafka headers."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("fcl.tracing")
HEADER = "traceparent"
_PROPAGATOR = TraceContextTextMapPropagator()
_configured = False


def setup(process: str) -> bool:
    """Install a tracer provider for this process when the `OTEL_*` variables ask for traces;
    returns whether they did. Safe to call more than once (the first call decides)."""
    global _configured
    if _configured:
        return True
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    names = [n for n in names if n != "none"]
    if not names or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or f"fcl-{process}"})
    provider = TracerProvider(resource=resource)
    for name in names:
        if name == "console":
            exporter = ConsoleSpanExporter(out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n")
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER: {name!r} is not one of otlp, console, none")
    trace.set_tracer_provider(provider)
    _configured = True
    log.info("traces exported to %s", ", ".join(names))
    return True


def enabled() -> bool:
    """Whether `setup` installed a tracer provider in this process."""
    return _configured


def shutdown() -> None:
    """Flush and stop the exporters (at the process's end)."""
    provider: Any = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


def tracer() -> trace.Tracer:
    return trace.get_tracer("fcl")


def context_of(traceparent: str | None) -> Context | None:
    """The parent context a W3C `traceparent` value names (None: start a new trace)."""
    if not traceparent:
        return None
    return _PROPAGATOR.extract({HEADER: traceparent})


def traceparent(span: trace.Span | None = None) -> str | None:
    """The W3C `traceparent` of `span` (default the current one), None when it is not recorded."""
    carrier: dict[str, str] = {}
    ctx = trace.set_span_in_context(span) if span is not None else None
    _PROPAGATOR.inject(carrier, context=ctx)
    return carrier.get(HEADER)


def from_headers(headers: Any) -> str | None:
    """The `traceparent` of a Kafka record's headers (a list of (name, bytes) pairs or a mapping);
    None when absent or not text."""
    if not headers:
        return None
    pairs: Sequence[tuple[Any, Any]] = list(headers.items()) if hasattr(headers, "items") else list(headers)
    for name, value in pairs:
        if name == HEADER and isinstance(value, bytes | str):
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            return text[:100] if text.isascii() else None
    return None


def headers_for(traceparent_value: str | None) -> list[tuple[str, bytes]] | None:
    """Kafka headers that carry `traceparent_value`."""
    return [(HEADER, traceparent_value.encode("ascii"))] if traceparent_value else None
