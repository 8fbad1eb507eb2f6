"""Without an exporter spans are not recorded, yet each has a valid trace id: the audit
entries of one request and of the workflow steps it caused still share it."""

from __future__ import annotations

from services.settings import OtelExporter, Settings
from services.telemetry import build_provider


def _span_of(exporter: OtelExporter) -> tuple[bool, bool, int]:
    provider, memory = build_provider(Settings(otel_exporter=exporter))
    with provider.get_tracer("test").start_as_current_span("request") as span:
        context = span.get_span_context()
        recorded = span.is_recording()
    finished = len(memory.get_finished_spans()) if memory is not None else 0
    provider.shutdown()
    return context.is_valid, recorded, finished


def test_without_an_exporter_a_span_has_a_trace_id_but_records_nothing() -> None:
    valid, recorded, _ = _span_of(OtelExporter.NONE)
    assert valid
    assert not recorded


def test_with_an_exporter_the_span_is_recorded_and_exported() -> None:
    valid, recorded, finished = _span_of(OtelExporter.MEMORY)
    assert valid
    assert recorded
    assert finished == 1
