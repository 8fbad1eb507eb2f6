"""Without an exporter spans are not recorded, yet each has a valid trace id: the audit
entries of one request and of the workflow steps it caused still share it."""

from __future__ import annotations

import httpx
from opentelemetry import trace
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from api.middleware import TraceContext
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


# ---- the request's span when there is no exporter ----------------------------------------

_CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
_TRACEPARENT = f"00-{_CALLER_TRACE}-00f067aa0ba902b7-01"


async def _seen(path: str, headers: dict[str, str] | None = None) -> list[str | None]:
    """The trace id each of two requests to `path` ran under (None: no valid span)."""
    provider, _ = build_provider(Settings(otel_exporter=OtelExporter.NONE))
    seen: list[str | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        span = trace.get_current_span()
        context = span.get_span_context()
        seen.append(format(context.trace_id, "032x") if context.is_valid else None)
        assert not span.is_recording()
        await PlainTextResponse("ok")(scope, receive, send)

    wrapped = TraceContext(
        app, tracer=provider.get_tracer("test"), excluded_paths=frozenset({"/healthz"})
    )
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for _ in range(2):
            assert (await client.get(path, headers=headers)).status_code == 200
    provider.shutdown()
    return seen


async def test_without_an_exporter_each_request_runs_under_a_trace_of_its_own() -> None:
    first, second = await _seen("/api/v1/referrals")
    assert first is not None and second is not None
    assert first != second


async def test_without_an_exporter_a_request_keeps_its_callers_trace() -> None:
    assert await _seen("/api/v1/referrals", {"traceparent": _TRACEPARENT}) == [_CALLER_TRACE] * 2


async def test_without_an_exporter_the_health_checks_open_no_span() -> None:
    assert await _seen("/healthz") == [None, None]
