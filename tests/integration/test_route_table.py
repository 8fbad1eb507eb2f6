"""The route table: every /api/v1 route asks the policies and is audited, and no route
exists that this file does not know about.

`ROUTES` maps each (method, path) of the API to the policy action it must decide, the
access it must then record, and one request to make (caller, body, query). The test walks
the app's routes and fails when they differ from `ROUTES` in either direction: a new
route needs an entry here, and so a policy decision and an audit record, before the
suite passes again.

The requests follow one referral through its lifecycle (create, read, consent, decline,
accept, intake, progress, care team assignment, access report, release, close, decision),
two more referrals for withdrawal and cancellation, and the auditor's routes. Each request
carries its own X-Request-ID, so its audit entries are exactly those with that request id
and an index above the log's newest before the request.

Outside /api/v1 only an explicit allowlist may exist: the public documentation and health
endpoints (no token), the Temporal UI codec (token required), and the browser login flow.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from temporalio.worker import Worker

from services.audit.models import AuditEntry
from tests.integration.audit_probe import (
    assert_problem,
    audit_entries_after,
    max_audit_index,
    new_request_id,
    walk_routes,
)
from tests.integration.journey import (
    CGG,
    CLINICAL_NOTE,
    OFFICE,
    Journey,
    consent_body,
    new_referral,
)
from tests.tokens import TokenMinter

pytestmark = pytest.mark.integration

FREE_CLINIC = ("free-clinic-antwerpen", "intake_coordinator")
FREE_CLINIC_WORKER = ("free-clinic-antwerpen", "care_worker")
AUDITOR = ("dpo-office", "auditor")
RUN = uuid.uuid4().hex[:8]
# the care worker the intake coordinator assigns to the main referral, then releases
WORKER_SUBJECT = f"rt-{RUN}-care_worker-free-clinic-antwerpen"

PERMIT = "authorization_permit"
DENY = "authorization_deny"


@dataclass(frozen=True)
class Route:
    """What one route must decide and record, and the request this test makes to it."""

    action: str  # the policy action decided (services.policy.Action)
    access: tuple[str, str] | None  # (event type, action) recorded after a 2xx answer
    party: tuple[str, str]
    expect: int  # the status this request gets at its point in the lifecycle
    referral: str | None = "main"  # which referral fills {referral_id}
    body: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    wait_for: str | None = None  # a stage the main referral reaches after the request


def _update(action: str) -> tuple[str, str]:
    return ("update", f"referral.{action}")


def _audit(what: str) -> tuple[str, str]:
    return ("query", f"audit.{what}")


R = "/api/v1/referrals/{referral_id}"
A = "/api/v1/audit"

# In lifecycle order: the requests are made in this order.
ROUTES: dict[tuple[str, str], Route] = {
    ("POST", "/api/v1/referrals"): Route(
        "create_referral", ("create", "referral.create"), OFFICE, 201, None, new_referral()
    ),
    ("GET", "/api/v1/referrals"): Route(
        "list_referrals", ("query", "referral.list"), OFFICE, 200, None, params={"limit": 5}
    ),
    ("GET", R): Route("view_referral", ("read", "referral.read"), OFFICE, 200),
    ("GET", f"{R}/consents"): Route("view_referral", ("read", "consent.list"), OFFICE, 200),
    ("POST", f"{R}/consent"): Route(
        "record_consent",
        _update("record_consent"),
        OFFICE,
        200,
        body=consent_body(),
        wait_for="offered",
    ),
    ("POST", f"{R}/decline"): Route(
        "decline", _update("decline"), CGG, 200, body={"reason": "no_capacity"}, wait_for="offered"
    ),
    ("POST", f"{R}/accept"): Route("accept", _update("accept"), FREE_CLINIC, 200),
    ("POST", f"{R}/intake"): Route(
        "record_intake",
        _update("record_intake"),
        FREE_CLINIC,
        200,
        body={"intake_date": datetime.now(UTC).isoformat()},
    ),
    ("POST", f"{R}/progress"): Route(
        "report_progress",
        _update("report_progress"),
        FREE_CLINIC,
        200,
        body={"attendance": "attending", "clinical_note": CLINICAL_NOTE},
    ),
    ("POST", f"{R}/care-team"): Route(
        "assign_care_worker",
        _update("assign_care_worker"),
        FREE_CLINIC,
        200,
        body={"subject": WORKER_SUBJECT},
    ),
    ("GET", f"{R}/care-team"): Route(
        "assign_care_worker", ("read", "care_team.list"), FREE_CLINIC, 200
    ),
    ("GET", f"{R}/access-report"): Route(
        "access_report", ("export", "referral.access_report"), FREE_CLINIC_WORKER, 200
    ),
    ("POST", f"{R}/care-team/{{subject}}/release"): Route(
        "release_care_worker", _update("release_care_worker"), FREE_CLINIC, 200
    ),
    ("POST", f"{R}/close"): Route(
        "close",
        _update("close"),
        FREE_CLINIC,
        200,
        body={"outcome": "completed"},
        wait_for="outcome_reported",
    ),
    ("POST", f"{R}/decision"): Route(
        "decide", _update("decide"), OFFICE, 200, body={"decision": "dismissed"}
    ),
    # permitted to the referring office, refused by the workflow: nothing left to rematch
    ("POST", f"{R}/rematch"): Route("rematch", _update("rematch"), OFFICE, 409),
    ("POST", f"{R}/consent/withdraw"): Route(
        "withdraw_consent", _update("withdraw_consent"), OFFICE, 200, "consented"
    ),
    ("POST", f"{R}/cancel"): Route("cancel", _update("cancel"), OFFICE, 200, "second"),
    ("GET", "/api/v1/policy/explain"): Route(
        # asking is the decision itself: no case is read, no further access is recorded
        "explain_policy",
        None,
        AUDITOR,
        200,
        None,
        params={
            "role": "prosecutor",
            "sector": "justice",
            "relation": "referrer",
            "action": "view_referral",
        },
    ),
    ("GET", f"{A}/entries"): Route(
        "search_audit", _audit("search"), AUDITOR, 200, None, params={"limit": 1}
    ),
    ("GET", f"{A}/tree-heads"): Route("search_audit", _audit("tree_heads"), AUDITOR, 200, None),
    ("POST", f"{A}/tree-heads"): Route(
        "verify_audit", _audit("sign_tree_head"), AUDITOR, 200, None
    ),
    ("GET", f"{A}/entries/{{index}}/inclusion-proof"): Route(
        "search_audit", _audit("inclusion_proof"), AUDITOR, 200, None
    ),
    ("GET", f"{A}/consistency-proof"): Route(
        "search_audit",
        _audit("consistency_proof"),
        AUDITOR,
        200,
        None,
        params={"first": 1, "second": 2},
    ),
    # verifying the whole log is the auditor's; the referring office is refused (and audited)
    ("POST", f"{A}/verify"): Route("verify_audit", _audit("verify"), OFFICE, 403, None),
    ("GET", f"{A}/public-key"): Route("verify_audit", _audit("public_key"), AUDITOR, 200, None),
    # the person's access report on request: the DPO's, recorded as an export
    ("POST", f"{A}/person-access-report"): Route(
        "person_access_report",
        ("export", "person.access_report"),
        AUDITOR,
        200,
        None,
        body={"national_number": "85073003328", "lang": "en"},
    ),
    ("GET", f"{A}/figures"): Route("search_audit", _audit("figures"), AUDITOR, 200, None),
    # the figures are the auditor's too: a case party is refused (and audited)
    ("GET", f"{A}/figures/{{figure}}/entries"): Route(
        "search_audit", _audit("figure_entries"), CGG, 403, None
    ),
}

# Outside /api/v1: nothing but these.
NO_TOKEN = {"/healthz", "/readyz", "/docs", "/openapi.json"}
TOKEN_REQUIRED = {"/codec/encode", "/codec/decode"}  # the Temporal UI's remote codec
WEB_LOGIN = {"/login", "/auth/callback", "/logout"}  # the browser's OIDC login flow
# The role UIs: every /ui route has its own row in test_web_ui.UI_ROUTES (policy action
# taken, or why none); "/" leads to /ui/, /static holds the UI's CSS and scripts, and
# /docs-assets the pinned Swagger UI files of /docs.
WEB_UI = {"/", "/static/{path}", "/docs-assets/{path}"}
OUTSIDE_API = NO_TOKEN | TOKEN_REQUIRED | WEB_LOGIN | WEB_UI


def _api_routes(app: FastAPI) -> set[tuple[str, str]]:
    return {(r.method, r.path) for r in walk_routes(app) if r.path.startswith("/api/v1/")}


def test_every_api_route_is_in_the_table(app: FastAPI) -> None:
    served = _api_routes(app)
    assert len(served) >= 13, "the route walk found too few routes: is it broken?"
    assert served - set(ROUTES) == set(), (
        "routes without an entry in ROUTES (say which policy action they decide and "
        "what access they record)"
    )
    assert set(ROUTES) - served == set(), "entries in ROUTES for routes the app does not serve"


def test_nothing_outside_the_api_but_the_allowlist(app: FastAPI) -> None:
    outside = {
        r.path
        for r in walk_routes(app)
        if not r.path.startswith(("/api/v1/", "/ui/"))  # /ui: tests/integration/test_web_ui.py
    }
    assert outside - OUTSIDE_API == set(), "a route outside /api/v1 that no allowlist names"
    assert NO_TOKEN <= outside, NO_TOKEN - outside


def test_the_apps_own_no_token_list_is_the_allowlist() -> None:
    from api.main import NO_TOKEN_PATHS

    assert set(NO_TOKEN_PATHS) == NO_TOKEN


# ---- one request to every /api/v1 route -------------------------------------------------


@pytest.fixture
async def client(app: FastAPI, worker: Worker) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def _subject(party: tuple[str, str]) -> str:
    return f"rt-{RUN}-{party[1]}-{party[0]}"


def _check_audit(
    key: tuple[str, str], spec: Route, resp: httpx.Response, entries: list[AuditEntry]
) -> list[str]:
    """What is wrong with the audit entries of one request (empty when all is well)."""
    problems = []
    subject = _subject(spec.party)
    # one access, one entry (IHE BALP): the decision, its policies and the outcome together;
    # the first receipt of channel messages by the office is an event of its own beside it
    mine = [
        e for e in entries if e.actor_subject == subject and e.event_type != "disclosure_recipient"
    ]
    if len(mine) != 1:
        seen = [(e.event_type, e.action, e.decision, e.outcome) for e in mine]
        return [f"{key}: expected one audit entry for {spec.action!r}; saw {seen}"]
    entry = mine[0]
    if entry.decision not in ("permit", "deny"):
        problems.append(f"{key}: no authorisation decision recorded: {entry.decision!r}")
    if entry.decision == "permit" and not entry.policy_ids:
        problems.append(f"{key}: a permit without its policy ids")
    if resp.status_code < 300:
        if entry.decision != "permit" or entry.outcome != "success":
            problems.append(
                f"{key}: answered {resp.status_code} as {entry.decision, entry.outcome}"
            )
        if spec.access is not None and (entry.event_type, entry.action) != spec.access:
            problems.append(f"{key}: no {spec.access} access recorded; saw {entry.action!r}")
    elif resp.status_code in (403, 404) and (entry.decision, entry.outcome) != ("deny", "refused"):
        problems.append(f"{key}: refused with {resp.status_code} but recorded {entry.decision!r}")
    elif resp.status_code >= 400 and entry.outcome == "success":
        problems.append(f"{key}: answered {resp.status_code} but recorded a success")
    return problems


async def test_every_api_route_decides_and_is_audited(
    app: FastAPI, client: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    assert _api_routes(app) == set(ROUTES)  # (the table test says which differ)
    second, consented = Journey(client, minter), Journey(client, minter)
    await second.create()
    await consented.create()
    await consented.step(OFFICE, "consent", consent_body())
    main = Journey(client, minter)
    ids: dict[str, str | None] = {"second": second.id, "consented": consented.id}
    index = max_audit_index(engine)
    problems: list[str] = []
    statuses: dict[tuple[str, str], int] = {}
    for key, spec in ROUTES.items():
        method, path = key
        url = path.replace("{index}", str(max(index, 0))).replace("{subject}", WORKER_SUBJECT)
        url = url.replace("{figure}", "denials")
        if "{referral_id}" in url:
            referral_id = ids["main"] if spec.referral == "main" else ids[str(spec.referral)]
            assert referral_id is not None, f"{key}: its referral does not exist yet"
            url = url.replace("{referral_id}", referral_id)
        request_id = new_request_id("rt")
        headers = {
            **minter.headers(*spec.party, subject=_subject(spec.party)),
            "X-Request-ID": request_id,
        }
        if key == ("POST", "/api/v1/referrals"):
            headers["Idempotency-Key"] = f"rt-{uuid.uuid4()}"
        before = max_audit_index(engine)
        resp = await client.request(
            method, url, json=spec.body, params=spec.params or None, headers=headers
        )
        statuses[key] = resp.status_code
        if resp.status_code >= 400:
            assert_problem(resp, resp.status_code)
        if key == ("POST", "/api/v1/referrals") and resp.status_code == 201:
            ids["main"] = main.id = resp.json()["id"]
        problems += _check_audit(
            key, spec, resp, audit_entries_after(engine, before, request_id=request_id)
        )
        if spec.wait_for is not None and resp.status_code < 300:
            await main.wait_stage(spec.wait_for)
    unexpected = {k: (statuses[k], s.expect) for k, s in ROUTES.items() if statuses[k] != s.expect}
    assert unexpected == {}, "(got, expected) status per route"
    assert problems == []


# ---- outside /api/v1 --------------------------------------------------------------------


async def test_allowlisted_routes_outside_the_api_behave(
    app: FastAPI, client: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    outside = {
        r.path
        for r in walk_routes(app)
        if not r.path.startswith(("/api/v1/", "/ui/"))  # /ui: tests/integration/test_web_ui.py
    }
    for path in sorted(NO_TOKEN & outside):
        resp = await client.get(path)
        assert resp.status_code == 200, (path, resp.status_code)
    for path in sorted(TOKEN_REQUIRED & outside):
        resp = await client.post(path, json={"payloads": []})
        assert_problem(resp, 401)
        # with a token: a decision, audited, whatever it is
        request_id = new_request_id("rt-codec")
        before = max_audit_index(engine)
        resp = await client.post(
            path,
            json={"payloads": []},
            headers={**minter.headers(*OFFICE), "X-Request-ID": request_id},
        )
        assert_problem(resp, 403)
        entries = audit_entries_after(engine, before, request_id=request_id)
        assert [(e.action, e.decision, e.outcome) for e in entries] == [
            (path.strip("/").replace("/", "."), "deny", "refused")
        ]
    if "/auth/callback" in outside:
        assert_problem(await client.get("/auth/callback?code=x&state=y"), 401)
    for path in sorted({"/login", "/logout"} & outside):
        resp = await client.get(path)
        assert resp.status_code == 302, (path, resp.status_code)
        assert resp.headers["location"].startswith("http://127.0.0.1/realms/"), resp.headers
