"""OpenTelemetry: one tracer provider per process, exporter chosen by settings."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.settings import OtelExporter, Settings

_provider: TracerProvider | None = None
memory_exporter: InMemorySpanExporter | None = None


def configure(settings: Settings) -> TracerProvider:
    """Install the global tracer provider once; later calls return the same provider."""
    global _provider, memory_exporter
    if _provider is not None:
        return _provider
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name})
    )
    exporter: SpanExporter | None = None
    if settings.otel_exporter is OtelExporter.CONSOLE:
        exporter = ConsoleSpanExporter()
    elif settings.otel_exporter is OtelExporter.OTLP:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otel_endpoint.rstrip("/") + "/v1/traces")
    elif settings.otel_exporter is OtelExporter.MEMORY:
        memory_exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory_exporter))
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def instrument_engine(engine: object, settings: Settings) -> None:
    """Spans for every SQL statement of `engine` (statements only, never parameters), when
    an exporter carries them: without one they would cost a read ~10% of its CPU for
    nothing (the request's own span, whose trace id the audit entry records, stays)."""
    if settings.otel_exporter is OtelExporter.NONE:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    SQLAlchemyInstrumentor().instrument(engine=engine, enable_commenter=False)
