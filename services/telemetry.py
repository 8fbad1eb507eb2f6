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
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from sqlalchemy import Engine

from services.settings import OtelExporter, Settings

_provider: TracerProvider | None = None
memory_exporter: InMemorySpanExporter | None = None


def configure(settings: Settings) -> TracerProvider:
    """Install the global tracer provider once; later calls return the same provider."""
    global _provider, memory_exporter
    if _provider is not None:
        return _provider
    provider, memory_exporter = build_provider(settings)
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def build_provider(settings: Settings) -> tuple[TracerProvider, InMemorySpanExporter | None]:
    """A tracer provider for the settings' exporter (and the in-memory exporter, if that is
    the one chosen)."""
    # Without an exporter no span is recorded (nothing would receive it, so its attributes
    # need not be gathered), but every span still gets a valid trace id: audit entries keep
    # linking a request to the workflow steps it caused.
    sampler = ALWAYS_OFF if settings.otel_exporter is OtelExporter.NONE else None
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name}), sampler=sampler
    )
    exporter: SpanExporter | None = None
    memory: InMemorySpanExporter | None = None
    if settings.otel_exporter is OtelExporter.CONSOLE:
        exporter = ConsoleSpanExporter()
    elif settings.otel_exporter is OtelExporter.OTLP:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otel_endpoint.rstrip("/") + "/v1/traces")
    elif settings.otel_exporter is OtelExporter.MEMORY:
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, memory


def instrument_engines(settings: Settings, *engines: Engine | None) -> None:
    """Spans for every SQL statement of `engines` (statements only, never parameters), when
    an exporter carries them: without one they would cost a read ~10% of its CPU for
    nothing (the request's own span, whose trace id the audit entry records, stays).

    All of a process's engines in one call: OpenTelemetry's instrumentor is one per process
    and ignores every call after its first (a second engine passed later stays untraced)."""
    if settings.otel_exporter is OtelExporter.NONE:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    SQLAlchemyInstrumentor().instrument(
        engines=[engine for engine in engines if engine is not None], enable_commenter=False
    )
