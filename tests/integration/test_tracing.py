"""One trace links the API call, the workflow it started and the activities it ran."""

from __future__ import annotations

import httpx

from services import telemetry
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
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    exporter = telemetry.memory_exporter
    assert exporter is not None, "the test settings select the in-memory exporter"
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
