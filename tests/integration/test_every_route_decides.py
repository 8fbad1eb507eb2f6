"""Every route asks the policies and is audited: a test walks the app's route table, so a
new route without a policy decision (and its audit entry) fails here."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select
from starlette.routing import Route

from services.audit.models import AuditEntry
from tests.integration.journey import AUDITOR, CGG, OFFICE, Journey, consent_body, new_referral
from tests.tokens import TokenMinter

Body = Callable[[], Any]
NOW = datetime.now(UTC).isoformat()

# (method, path) -> (policy action, caller, body). Callers may be allowed or refused:
# either way the decision must be taken by the policies and written to the audit log.
ROUTES: dict[tuple[str, str], tuple[str, tuple[str, str], Body | None]] = {
    ("POST", "/api/v1/referrals"): ("create_referral", OFFICE, new_referral),
    ("GET", "/api/v1/referrals"): ("list_referrals", OFFICE, None),
    ("GET", "/api/v1/referrals/{referral_id}"): ("view_referral", OFFICE, None),
    ("GET", "/api/v1/referrals/{referral_id}/consents"): ("view_referral", OFFICE, None),
    ("POST", "/api/v1/referrals/{referral_id}/consent"): ("record_consent", OFFICE, consent_body),
    ("POST", "/api/v1/referrals/{referral_id}/consent/withdraw"): ("withdraw_consent", CGG, None),
    ("POST", "/api/v1/referrals/{referral_id}/accept"): ("accept", OFFICE, None),
    ("POST", "/api/v1/referrals/{referral_id}/decline"): (
        "decline",
        OFFICE,
        lambda: {"reason": "no_capacity"},
    ),
    ("POST", "/api/v1/referrals/{referral_id}/intake"): (
        "record_intake",
        CGG,
        lambda: {"intake_date": NOW},
    ),
    ("POST", "/api/v1/referrals/{referral_id}/progress"): (
        "report_progress",
        CGG,
        lambda: {"attendance": "attending"},
    ),
    ("POST", "/api/v1/referrals/{referral_id}/close"): (
        "close",
        CGG,
        lambda: {"outcome": "completed"},
    ),
    ("POST", "/api/v1/referrals/{referral_id}/decision"): (
        "decide",
        CGG,
        lambda: {"decision": "dismissed"},
    ),
    ("POST", "/api/v1/referrals/{referral_id}/cancel"): ("cancel", CGG, None),
    ("POST", "/api/v1/referrals/{referral_id}/rematch"): ("rematch", CGG, None),
    ("GET", "/api/v1/referrals/{referral_id}/care-team"): ("assign_care_worker", CGG, None),
    ("POST", "/api/v1/referrals/{referral_id}/care-team"): (
        "assign_care_worker",
        CGG,
        lambda: {"subject": "rd-care-worker"},
    ),
    ("POST", "/api/v1/referrals/{referral_id}/care-team/{subject}/release"): (
        "release_care_worker",
        CGG,
        None,
    ),
    ("GET", "/api/v1/policy/explain"): ("explain_policy", AUDITOR, None),
    ("GET", "/api/v1/referrals/{referral_id}/access-report"): ("access_report", OFFICE, None),
    ("GET", "/api/v1/audit/entries"): ("search_audit", AUDITOR, None),
    ("GET", "/api/v1/audit/tree-heads"): ("search_audit", AUDITOR, None),
    ("POST", "/api/v1/audit/tree-heads"): ("verify_audit", AUDITOR, None),
    ("GET", "/api/v1/audit/entries/{index}/inclusion-proof"): ("search_audit", AUDITOR, None),
    ("GET", "/api/v1/audit/consistency-proof"): ("search_audit", OFFICE, None),
    ("POST", "/api/v1/audit/verify"): ("verify_audit", AUDITOR, None),
    ("GET", "/api/v1/audit/public-key"): ("verify_audit", AUDITOR, None),
    ("POST", "/api/v1/audit/person-access-report"): (
        "person_access_report",
        OFFICE,
        lambda: {"national_number": "85073003328", "lang": "nl"},
    ),
    ("GET", "/api/v1/audit/figures"): ("search_audit", AUDITOR, None),
    ("GET", "/api/v1/audit/figures/{figure}/entries"): ("search_audit", OFFICE, None),
    ("POST", "/codec/decode"): ("decode_payloads", OFFICE, lambda: {"payloads": []}),
    ("POST", "/codec/encode"): ("decode_payloads", AUDITOR, lambda: {"payloads": []}),
}

# Query strings for routes that need them before any decision can be taken.
QUERIES = {
    "/api/v1/audit/consistency-proof": "?first=1&second=2",
    "/api/v1/policy/explain": "?role=prosecutor&sector=justice&relation=referrer"
    "&category=clinical&consent=active",
}

# Routes that take no token and touch no case: health, the API docs and the login flow.
OPEN_ROUTES = {
    "/healthz",
    "/readyz",
    "/docs",
    "/docs-assets",
    "/openapi.json",
    "/login",
    "/auth/callback",
    "/logout",
    "/",  # leads to /ui/
}


UI_PATHS = ("/ui/", "/static")


def _app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app serves, including routes of included routers."""
    found = set()
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:  # an included router (resolved lazily by FastAPI)
            found |= {(m, ctx.path) for ctx in contexts() for m in ctx.methods}
        elif isinstance(route, APIRoute | Route):
            found |= {(m, route.path) for m in (route.methods or {"GET"})}
    return found


def test_route_table_is_complete(app: FastAPI) -> None:
    routes = _app_routes(app)
    # the UI's routes have their own table (test_web_ui.UI_ROUTES), driven with sessions
    guarded = {r for r in routes if r[1] not in OPEN_ROUTES and not r[1].startswith(UI_PATHS)}
    assert guarded == set(ROUTES), (
        "every route needs a row here (policy action and a caller): "
        f"missing {sorted(guarded - set(ROUTES))}, stale {sorted(set(ROUTES) - guarded)}"
    )
    open_paths = {r[1] for r in routes if r[1] in OPEN_ROUTES}
    assert {r[1] for r in routes if r[1].startswith(UI_PATHS)}, "no UI routes found: broken walk?"
    assert open_paths <= OPEN_ROUTES


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES), ids=lambda v: str(v))
async def test_route_takes_an_audited_policy_decision(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine, method: str, path: str
) -> None:
    action, caller, body = ROUTES[(method, path)]
    j = Journey(api, minter)
    await j.create()
    with Session(engine) as s:
        last = s.exec(select(func.max(AuditEntry.index))).one()
    resp = await api.request(
        method,
        path.replace("{referral_id}", str(j.id))
        .replace("{index}", "0")
        .replace("{subject}", "rd-care-worker")
        .replace("{figure}", "denials")
        + QUERIES.get(path, ""),
        json=body() if body else None,
        headers={**minter.headers(*caller), "Idempotency-Key": f"erd-{uuid.uuid4()}"},
    )
    assert resp.status_code < 500, resp.text
    with Session(engine) as s:
        entries = s.exec(
            select(AuditEntry).where(AuditEntry.index > last).order_by(col(AuditEntry.index))
        ).all()
    # one access, one entry (IHE BALP): it holds the decision, its policies and the outcome
    # (the first receipt of channel messages by the office is an event of its own beside it)
    mine = [
        e
        for e in entries
        if e.actor_organisation == caller[0] and e.event_type != "disclosure_recipient"
    ]
    assert len(mine) == 1, [(e.event_type, e.action, e.outcome) for e in mine]
    decision = mine[0]
    assert action  # the policy action this route decides (the table documents it)
    assert decision.decision in {"permit", "deny"}
    assert decision.event_type in {"create", "read", "query", "update", "export"}, (
        decision.event_type
    )
    if decision.decision == "permit":
        assert decision.policy_ids, "a permit names the policies that decided it"
        assert resp.status_code < 400, resp.text
        assert decision.outcome == "success", decision.outcome
    else:
        assert resp.status_code in (403, 404), resp.text
        assert decision.outcome == "refused", decision.outcome
        assert decision.categories == [], "a refused access discloses nothing"
