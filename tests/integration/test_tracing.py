"""One trace links the API call, the workflow it started and the activities it ran."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.main import create_app
from api.middleware import TraceContext
from services import telemetry
from services.audit.models import AuditEntry
from services.runtime import Runtime
from services.settings import OtelExporter, Settings
from tests.integration.journey import OFFICE, Journey, consent_body
from tests.tokens import TokenMinter


def _server_trace(spans: list, route_part: str) -> int:  # type: ignore[type-arg]
    server = [
        s
        for s in spans
        if s.kind.name == "SERVER" and route_part in str((s.attributes or {}).get("http.route"))
    ]
    assert server, [s.name for s in spans]
    return server[0].context.trace_id  # type: ignore[no-any-return]


async def test_one_trace_spans_api_workflow_and_activities(
    app: FastAPI, api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    exporter = telemetry.memory_exporter
    assert exporter is not None, "the test settings select the in-memory exporter"
    # with an exporter, OpenTelemetry's instrumentation opens the request spans, not the
    # light middleware (`test_without_an_exporter_...` below)
    assert TraceContext not in {m.cls for m in app.user_middleware}
    exporter.clear()
    j = Journey(api, minter)
    await j.create()
    await j.step(OFFICE, "consent", consent_body())
    spans = list(exporter.get_finished_spans())

    trace_id = _server_trace(spans, "/api/v1/referrals")
    in_trace = {s.name for s in spans if s.context.trace_id == trace_id}
    for expected in (
        "StartWorkflow:ReferralWorkflow",
        "RunWorkflow:ReferralWorkflow",
        "StartActivity:record_transition",
        "RunActivity:record_transition",
    ):
        assert expected in in_trace, (expected, in_trace)
    # the database statements of the request belong to the same trace
    assert any(name.startswith(("INSERT", "SELECT")) for name in in_trace), in_trace

    # later updates: the client call is in the request's trace, and the handler and its
    # activities continue the workflow's trace
    update_trace = _server_trace(spans, "/consent")
    assert any(
        s.name == "StartWorkflowUpdate:record_consent" and s.context.trace_id == update_trace
        for s in spans
    )
    assert any(
        s.name == "RunActivity:store_consent" and s.context.trace_id == trace_id for s in spans
    )
    # no personal data in span names or attributes
    assert "Testpersoon" not in str([(s.name, dict(s.attributes or {})) for s in spans])


async def test_without_an_exporter_an_audit_entry_keeps_the_callers_trace(
    settings: Settings,
    runtime: Runtime,
    dev_server: WorkflowEnvironment,
    worker: Worker,
    minter: TokenMinter,
) -> None:
    # `make run` and the bench export no spans: the light middleware (TraceContext) then
    # opens the request's span, and the entry of what the request did still names its trace.
    light = create_app(
        settings.model_copy(update={"otel_exporter": OtelExporter.NONE}),
        runtime=runtime,
        temporal=dev_server.client,
    )
    assert TraceContext in {m.cls for m in light.user_middleware}
    caller_trace = "0af7651916cd43dd8448eb211c80319c"
    transport = httpx.ASGITransport(app=light)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        j = Journey(client, minter)
        await j.create()
        traced, untraced = str(uuid.uuid4()), str(uuid.uuid4())
        for request_id, extra in (
            (traced, {"traceparent": f"00-{caller_trace}-b7ad6b7169203331-01"}),
            (untraced, {}),
        ):
            headers = {**minter.headers(*OFFICE), "x-request-id": request_id, **extra}
            resp = await client.get(f"/api/v1/referrals/{j.id}", headers=headers)
            assert resp.status_code == 200, resp.text
    with Session(runtime.engine) as session:
        traces = {
            entry.request_id: entry.trace_id
            for entry in session.exec(
                select(AuditEntry).where(col(AuditEntry.request_id).in_([traced, untraced]))
            )
        }
    assert traces[traced] == caller_trace
    assert traces[untraced] is not None and len(traces[untraced]) == 32
    assert traces[untraced] != caller_trace


async def test_a_read_on_the_event_loop_traces_its_statements(
    api: httpx.AsyncClient, minter: TokenMinter, runtime: Runtime
) -> None:
    # The read every party polls is served on the event loop, with its own engine on
    # SQLite (`event_loop_engine`): its statements belong to the request's trace too.
    if runtime.loop_engine is None:
        pytest.skip("on PostgreSQL every read is served on a thread, with the request engine")
    exporter = telemetry.memory_exporter
    assert exporter is not None
    j = Journey(api, minter)
    await j.create()
    exporter.clear()
    await j.view()
    spans = list(exporter.get_finished_spans())
    trace_id = _server_trace(spans, "{referral_id}")
    assert any(s.name.startswith("SELECT") and s.context.trace_id == trace_id for s in spans), [
        s.name for s in spans
    ]
