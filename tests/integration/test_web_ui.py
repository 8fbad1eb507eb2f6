"""The role UIs over HTTP (real Temporal, real database; sessions sealed by the app with
tokens of the test JWKS): one referral through the three roles' pages, what justice
pages never show, CSRF, the login redirect, security headers, languages, bad input."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from services.audit.models import AuditEntry
from services.demo import DEMO_FRAMEWORK_ID
from services.models import Referral
from tests.integration.audit_probe import walk_routes
from tests.integration.journey import (
    AUDITOR,
    CGG,
    CGG_WORKER,
    CLINICAL_NOTE,
    NOTE,
    OFFICE,
    PERSON,
    WELFARE_NOTE,
    Journey,
)
from tests.integration.web_client import WebUser, main_of
from tests.tokens import TokenMinter

pytestmark = pytest.mark.integration

CLOSING_NOTE = "Closing: relapse prevention plan handed over to the GP"
CARE_ONLY = (CLINICAL_NOTE, WELFARE_NOTE, CLOSING_NOTE)
# Form field names that only care pages carry (a justice page must not offer them).
CARE_FORMS = ('name="clinical_note"', 'name="welfare_note"', '/accept"', '/intake"', '/progress"')


def referral_form(key: str, **overrides: str) -> dict[str, str]:
    form = {
        "framework_id": str(DEMO_FRAMEWORK_ID),
        "district": "antwerpen",
        "language": "nl",
        **PERSON,
        "phone": "+32 470 12 34 56",
        "address": "Teststraat 1, 2000 Antwerpen",
        "offence_category": "drug_possession",
        "notice_number": "AN.12.L1.000042-26",
        "deadline": "2027-03-01",
        "target_group": "substance_use",
        "substance_or_behaviour": "cannabis",
        "note": NOTE,
        "idempotency_key": key,
    }
    form.update(overrides)
    return form


WORKER_SUBJECT = "user-care_worker-cgg-antwerpen"  # the subject of CGG_WORKER's session
CONSENT_FORM = {
    "given": "yes",
    "purposes": ["referral_to_care", "care_team_sharing", "progress_reporting_to_justice"],
    "categories": [
        "identity",
        "contact",
        "judicial_context",
        "referral_reason",
        "clinical",
        "welfare",
        "compliance",
    ],
    "recipients": ["parket-antwerpen", "health", "welfare"],
    "disclosers": ["parket-antwerpen", "health", "welfare"],
    "signed_by": "person",
    "signer_capacity": "self",
    "signed_on": "2026-11-28",
    "signing_method": "paper_form",
    "right_to_revoke_explained": "true",
    "valid_until": "2027-11-30",
    "evidence_reference": "consent form AN-2026-0042",
}


def check_page(html: str) -> None:
    """What every page must be: no inline script, style or handler (the CSP forbids them)."""
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
    assert not re.search(r"\sstyle=", html), "inline style attribute"
    assert "<style" not in html, "inline <style>"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    assert "javascript:" not in html
    # every form that changes something carries the CSRF token
    for form in re.findall(r"<form[^>]*method=\"post\".*?</form>", html, flags=re.S):
        assert 'name="csrf_token"' in form, form[:200]
    # every input, select and textarea has a label or is hidden
    ids = set(re.findall(r'<label[^>]*for="([^"]+)"', html))
    for tag in re.findall(r"<(?:input|select|textarea)\b[^>]*>", html):
        if 'type="hidden"' in tag or 'type="radio"' in tag or 'type="checkbox"' in tag:
            continue
        found = re.search(r'id="([^"]+)"', tag)
        assert found is not None and found[1] in ids, f"unlabelled field: {tag}"


def check_justice_page(html: str) -> None:
    check_page(html)
    for text in CARE_ONLY:
        assert text not in html, "care content on a justice page"
    for marker in CARE_FORMS:
        assert marker not in html, f"a care form on a justice page: {marker}"


async def _offered(cgg: WebUser, rid: str) -> str:
    for _ in range(200):
        html = await cgg.page("/ui/care")
        if f"/ui/referrals/{rid}" in html:
            return html
        await asyncio.sleep(0.05)
    raise AssertionError("the offer never reached the provider's inbox")


async def _stage(user: WebUser, rid: str, stage: str) -> str:
    for _ in range(200):
        html = await user.page(f"/ui/referrals/{rid}")
        if f"stage-{stage}" in html:
            return html
        await asyncio.sleep(0.05)
    raise AssertionError(f"the referral never reached {stage}")


async def test_one_referral_through_the_three_roles_pages(
    app: FastAPI, api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    justice_pages: list[str] = []
    async with (
        WebUser(app, minter, OFFICE) as office,
        WebUser(app, minter, CGG) as cgg,
        WebUser(app, minter, CGG_WORKER) as worker,
        WebUser(app, minter, AUDITOR) as auditor,
    ):
        # the office's home, the form, the referral page with the consent step
        home = await office.get("/ui/")
        assert home.status_code == 303 and home.headers["location"] == "/ui/justice"
        justice_pages.append(await office.page("/ui/justice"))
        form = await office.page("/ui/referrals/new")
        justice_pages.append(form)
        key = re.search(r'name="idempotency_key" value="([^"]+)"', form)
        assert key is not None
        created = await office.submit("/ui/referrals", referral_form(key[1]))
        rid = created.split("/")[3].split("?")[0]
        page = await office.page(created)
        justice_pages.append(page)
        assert f"/ui/referrals/{rid}/consent" in page and PERSON["name"] in page
        # the consent form lets the office choose recipients and disclosers, and record
        # who signed (a capacity, not a name), when and how
        for field in ("recipients", "disclosers"):
            assert f'name="{field}" value="health"' in page
            assert f'name="{field}" value="cgg-antwerpen"' in page
        for field in ("signed_by", "signer_capacity", "signed_on", "signing_method"):
            assert f'name="{field}"' in page
        # the same form sent twice (a double click) creates one referral
        again = await office.submit("/ui/referrals", referral_form(key[1]))
        assert again.split("?")[0] == created.split("?")[0]
        justice_pages.append(
            await office.page(await office.submit(f"/ui/referrals/{rid}/consent", CONSENT_FORM))
        )

        # the provider's inbox shows the offer with the time left; it accepts
        inbox = await _offered(cgg, rid)
        check_page(inbox)
        assert re.search(r"\d+ h \d+ min left", inbox)
        offer = await cgg.page(f"/ui/referrals/{rid}")
        check_page(offer)
        assert f"/ui/referrals/{rid}/accept" in offer and 'name="reason"' in offer
        accepted = await cgg.page(await cgg.submit(f"/ui/referrals/{rid}/accept"))
        check_page(accepted)

        # the consent as recorded: its scope and its signature
        consents = await office.page(f"/ui/referrals/{rid}/consents")
        check_page(consents)
        justice_pages.append(consents)
        assert "Paper form" in consents and "For themselves" in consents and "Active" in consents

        # the intake coordinator puts the care worker on the case (need to know)
        assert f"/ui/referrals/{rid}/care-team" in accepted
        team = await cgg.page(f"/ui/referrals/{rid}/care-team")
        check_page(team)
        assert "No care worker is assigned yet." in team
        team = await cgg.page(
            await cgg.submit(f"/ui/referrals/{rid}/care-team", {"subject": WORKER_SUBJECT})
        )
        check_page(team)
        assert WORKER_SUBJECT in team and "The care worker was assigned" in team

        # the care worker: intake, progress with notes, the access report, close
        intake = {"intake_date": "2026-11-28", "attended": "yes"}
        await worker.submit(f"/ui/referrals/{rid}/intake", intake)
        report = {"attendance": "attending", "clinical_note": CLINICAL_NOTE}
        report["welfare_note"] = WELFARE_NOTE
        care_page = await worker.page(await worker.submit(f"/ui/referrals/{rid}/progress", report))
        check_page(care_page)
        assert CLINICAL_NOTE in care_page and WELFARE_NOTE in care_page
        access = await worker.page(f"/ui/referrals/{rid}/access-report", params={"in": "fr"})
        check_page(access)
        assert '<article class="report" lang="fr">' in access and "data-print" in access

        # justice meanwhile: attendance yes, notes never
        during = await _stage(office, rid, "in_progress")
        justice_pages.append(during)
        assert "Attending" in during or "attending" in during
        await worker.submit(
            f"/ui/referrals/{rid}/close", {"outcome": "completed", "clinical_note": CLOSING_NOTE}
        )

        # the prosecutor decides once the outcome is reported
        outcome = await _stage(office, rid, "outcome_reported")
        justice_pages.append(outcome)
        assert f"/ui/referrals/{rid}/decision" in outcome
        decided = await office.page(
            await office.submit(f"/ui/referrals/{rid}/decision", {"decision": "dismissed"})
        )
        justice_pages.append(decided)
        listed = await office.page("/ui/justice")
        justice_pages.append(listed)
        row = re.search(rf'<tr>\s*<td><a href="/ui/referrals/{rid}">.*?</tr>', listed, flags=re.S)
        assert row is not None
        # with consent to progress reporting, the office's list shows outcome and decision
        assert "Completed" in row[0] and "Dismissed" in row[0], row[0]

        # the auditor: search, the referral's timeline, verify now, explain. The search
        # names this referral too: the first page of the organisation's entries, in log
        # order, holds those of earlier tests on the shared database.
        mine = app.state.runtime.gatekeeper.pseudonym(uuid.UUID(rid))
        found = await auditor.page(
            "/ui/audit",
            params={"search": "1", "organisation": "cgg-antwerpen", "pseudonym": mine},
        )
        check_page(found)
        pseudonyms = set(re.findall(r"/ui/audit/timeline/(rp_[0-9a-f]{32})", found))
        assert pseudonyms == {mine}, main_of(found)[:1000]
        timeline = await auditor.page(f"/ui/audit/timeline/{mine}")
        check_page(timeline)
        assert "referral.accept" in timeline or "accept" in timeline
        verified = await auditor.post("/ui/audit/verify")
        assert verified.status_code == 200 and 'class="ok"' in verified.text, main_of(verified.text)
        explained = await auditor.page(
            "/ui/audit/explain",
            params={
                "role": "prosecutor",
                "sector": "justice",
                "relation": "referrer",
                "subject": "clinical",
                "consent": "active",
            },
        )
        assert "disclosure.forbid-clinical-to-justice" in explained
        for html in (timeline, found, explained):
            for text in (*CARE_ONLY, PERSON["name"], PERSON["national_number"]):
                assert text not in html, "case content on an auditor page"

        # the office's own pages never showed care content nor care forms
        for html in justice_pages:
            check_justice_page(html)


async def test_no_page_shows_justice_the_care_notes_at_any_stage(
    app: FastAPI, api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    """Justice pages at every stage of a referral whose notes are full of care content."""
    j = Journey(api, minter)
    await j.to_in_progress(reporting=True)
    rid = str(j.id)
    await j.call(CGG, "POST", f"/api/v1/referrals/{rid}/care-team", {"subject": WORKER_SUBJECT})
    async with WebUser(app, minter, OFFICE) as office, WebUser(app, minter, CGG_WORKER) as worker:
        await worker.submit(
            f"/ui/referrals/{rid}/progress",
            {
                "attendance": "attending",
                "clinical_note": CLINICAL_NOTE,
                "welfare_note": WELFARE_NOTE,
            },
        )
        pages = [await office.page(f"/ui/referrals/{rid}"), await office.page("/ui/justice")]
        await worker.submit(
            f"/ui/referrals/{rid}/close", {"outcome": "failed", "clinical_note": CLOSING_NOTE}
        )
        pages.append(await _stage(office, rid, "outcome_reported"))
        # a justice user posting a care form is refused and stores nothing
        refused = await office.post(
            f"/ui/referrals/{rid}/progress",
            {"attendance": "attending", "clinical_note": "justice wrote this"},
        )
        assert refused.status_code in (403, 409), refused.status_code
        pages.append(refused.text)
        for html in pages:
            check_justice_page(html)
        care = await worker.page(f"/ui/referrals/{rid}")
        assert "justice wrote this" not in care and CLOSING_NOTE in care


async def test_without_a_session_every_page_leads_to_the_login(
    app: FastAPI, api: httpx.AsyncClient, engine: Engine
) -> None:
    rid = uuid.uuid4()
    routes = [r for r in walk_routes(app) if r.path.startswith("/ui/") and "{lang}" not in r.path]
    assert len(routes) >= 15, "the route walk found too few UI routes"
    with Session(engine) as s:
        before = s.exec(select(func.count()).select_from(Referral)).one()
    for route in routes:
        path = route.path.replace("{referral_id}", str(rid))
        path = path.replace("{pseudonym}", "rp_" + "0" * 32).replace("{figure}", "denials")
        resp = await api.request(route.method, path, data={"csrf_token": "x"})
        assert resp.status_code == 303, (route.method, path, resp.status_code)
        assert resp.headers["location"].startswith("/login?next=")
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(Referral)).one() == before
    root = await api.get("/")
    assert root.status_code == 303 and root.headers["location"] == "/ui/"
    there = await api.get("/ui/justice?x=1")
    assert there.headers["location"] == "/login?next=/ui/justice%3Fx%3D1"


async def test_a_form_without_the_sessions_csrf_token_changes_nothing(
    app: FastAPI, api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    j = Journey(api, minter)
    await j.create()
    rid = str(j.id)
    async with WebUser(app, minter, OFFICE) as office:
        for token in ("", "forged-token", office.csrf + "x"):
            resp = await office.post(f"/ui/referrals/{rid}/cancel", csrf=token)
            assert resp.status_code == 403, (token, resp.status_code)
            assert resp.headers["content-security-policy"]
        resp = await office.client.post(f"/ui/referrals/{rid}/cancel", data={})
        assert resp.status_code == 403
        # the right token from another site (a cross-origin form) is refused too
        resp = await office.client.post(
            f"/ui/referrals/{rid}/cancel",
            data={"csrf_token": office.csrf},
            headers={"Origin": "https://evil.example"},
        )
        assert resp.status_code == 403
        # ... and so is one without Origin whose Referer names another site
        resp = await office.client.post(
            f"/ui/referrals/{rid}/cancel",
            data={"csrf_token": office.csrf},
            headers={"Referer": "https://evil.example/form.html"},
        )
        assert "origin" not in {k.lower() for k in resp.request.headers}
        assert resp.status_code == 403
        page = await office.page(f"/ui/referrals/{rid}")
        assert "stage-awaiting_consent" in page
        # another user's token is not this user's
        async with WebUser(app, minter, OFFICE) as other:
            resp = await office.post(f"/ui/referrals/{rid}/cancel", csrf=other.csrf)
            assert resp.status_code == 403
        # with its own token the same form works
        assert (await office.post(f"/ui/referrals/{rid}/cancel")).status_code == 303
    # a cancelled referral goes on to the outcome and the decision, like every referral
    assert (await j.view())["stage"] in ("cancelled", "outcome_reported")


async def test_pages_send_the_security_headers(
    app: FastAPI, api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    async with WebUser(app, minter, AUDITOR) as auditor:
        resp = await auditor.get("/ui/audit")
        assert resp.status_code == 200
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["cache-control"] == "no-store"
        check_page(resp.text)
        for asset in ("/static/app.css", "/static/app.js", "/static/htmx-2.0.11.min.js"):
            assert (await api.get(asset)).status_code == 200, asset


async def test_language_from_the_choice_else_accept_language(
    app: FastAPI, api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    async with WebUser(app, minter, OFFICE, language=None) as office:
        default = await office.page("/ui/justice")
        assert '<html lang="nl">' in default
        assert "Doorverwijzingen van het parket" in default  # Dutch, from the catalog
        french = await office.page("/ui/justice", headers={"Accept-Language": "fr-BE,fr;q=0.9"})
        assert '<html lang="fr">' in french
        weighted = await office.page(
            "/ui/justice", headers={"Accept-Language": "es, de;q=0.8, en;q=0.5"}
        )
        assert '<html lang="de">' in weighted
        chosen = await office.get("/ui/language/en", params={"next": "/ui/justice"})
        assert chosen.status_code == 303 and chosen.headers["location"] == "/ui/justice"
        assert "referral_lang=en" in chosen.headers["set-cookie"]
        english = await office.page("/ui/justice", headers={"Accept-Language": "fr"})
        assert '<html lang="en">' in english and "Referrals of the office" in english
        # an unknown language or a foreign target changes nothing
        odd = await office.get("/ui/language/xx", params={"next": "https://evil.example/"})
        assert odd.headers["location"] == "/ui/" and "set-cookie" not in odd.headers
        for target in ("//evil.example/", "/\\evil.example/", "/\tevil", "evil.example"):
            away = await office.get("/ui/language/en", params={"next": target})
            assert away.headers["location"] == "/ui/", target
        # the switcher offers the four languages on every page
        for code in ("nl", "fr", "de", "en"):
            assert f'href="/ui/language/{code}?next=' in english


async def test_bad_form_input_is_a_4xx_page_and_creates_nothing(
    app: FastAPI, api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    with Session(engine) as s:
        before = s.exec(select(func.count()).select_from(Referral)).one()
    async with WebUser(app, minter, OFFICE) as office:
        bad = {
            "national_number": referral_form(str(uuid.uuid4()), national_number="123"),
            "birth_date": referral_form(str(uuid.uuid4()), birth_date="not a date"),
            "language": referral_form(str(uuid.uuid4()), language="xx"),
            "framework_id": referral_form(str(uuid.uuid4()), framework_id="not-a-uuid"),
        }
        for field, form in bad.items():
            resp = await office.post("/ui/referrals", form)
            assert resp.status_code == 422, resp.status_code
            check_page(resp.text)
            # the form comes back as sent, the field to correct named and marked
            assert f'<a href="#{field}">' in resp.text, main_of(resp.text)[:1500]
            assert f'id="{field}-error"' in resp.text
            assert f'value="{PERSON["name"]}"' in resp.text
            assert f'value="{form["idempotency_key"]}"' in resp.text
        missing = await office.post("/ui/referrals", {"name": "x"})
        assert 400 <= missing.status_code < 500
        unknown = await office.get(f"/ui/referrals/{uuid.uuid4()}")
        assert unknown.status_code == 404
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(Referral)).one() == before


async def test_ui_reads_are_audited_like_the_api(
    app: FastAPI, api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    j = Journey(api, minter)
    await j.create()
    with Session(engine) as s:
        last = s.exec(select(func.max(AuditEntry.index))).one()
    async with WebUser(app, minter, CGG) as cgg:
        # an organisation with no part in the case: not found, and the denial is logged
        resp = await cgg.get(f"/ui/referrals/{j.id}")
        assert resp.status_code == 404
    with Session(engine) as s:
        entries = s.exec(select(AuditEntry).where(AuditEntry.index > last)).all()
    assert any(e.decision == "deny" and e.actor_organisation == "cgg-antwerpen" for e in entries)


# ---- every UI route: the policy action it takes, or why it takes none ----------------

UI_NO_DECISION = {
    ("GET", "/ui/"): "leads to the user's home",
    ("GET", "/ui/language/{lang}"): "sets a language preference",
    ("GET", "/ui/referrals/new"): "an empty form; sending it decides create_referral",
}
RID = "{referral_id}"
UI_ROUTES: dict[tuple[str, str], tuple[str, tuple[str, str], dict[str, object] | None]] = {
    ("GET", "/ui/justice"): ("list_referrals", OFFICE, None),
    ("GET", "/ui/care"): ("list_referrals", CGG, None),
    ("POST", "/ui/referrals"): ("create_referral", CGG, {}),
    ("GET", f"/ui/referrals/{RID}"): ("view_referral", CGG_WORKER, None),
    ("POST", f"/ui/referrals/{RID}/consent"): ("record_consent", CGG, CONSENT_FORM),
    ("POST", f"/ui/referrals/{RID}/withdraw"): ("withdraw_consent", CGG, None),
    ("POST", f"/ui/referrals/{RID}/accept"): ("accept", OFFICE, None),
    ("POST", f"/ui/referrals/{RID}/cancel"): ("cancel", CGG, None),
    ("POST", f"/ui/referrals/{RID}/rematch"): ("rematch", CGG, None),
    ("POST", f"/ui/referrals/{RID}/decline"): ("decline", OFFICE, {"reason": "no_capacity"}),
    ("POST", f"/ui/referrals/{RID}/intake"): (
        "record_intake",
        OFFICE,
        {"intake_date": "2026-11-28"},
    ),
    ("POST", f"/ui/referrals/{RID}/progress"): (
        "report_progress",
        OFFICE,
        {"attendance": "attending"},
    ),
    ("POST", f"/ui/referrals/{RID}/close"): ("close", OFFICE, {"outcome": "completed"}),
    ("POST", f"/ui/referrals/{RID}/decision"): ("decide", CGG, {"decision": "dismissed"}),
    ("GET", f"/ui/referrals/{RID}/access-report"): ("access_report", OFFICE, None),
    ("GET", f"/ui/referrals/{RID}/consents"): ("view_referral", OFFICE, None),
    ("GET", f"/ui/referrals/{RID}/care-team"): ("assign_care_worker", CGG, None),
    ("POST", f"/ui/referrals/{RID}/care-team"): (
        "assign_care_worker",
        CGG,
        {"subject": "ui-care-worker"},
    ),
    ("POST", f"/ui/referrals/{RID}/care-team/release"): (
        "release_care_worker",
        CGG,
        {"subject": "ui-care-worker"},
    ),
    ("GET", "/ui/audit"): ("search_audit", AUDITOR, None),
    ("GET", "/ui/audit/timeline/{pseudonym}"): ("search_audit", OFFICE, None),
    ("POST", "/ui/audit/verify"): ("verify_audit", OFFICE, None),
    ("POST", "/ui/audit/tree-heads"): ("verify_audit", AUDITOR, None),
    ("GET", "/ui/audit/explain"): ("explain_policy", CGG, None),
    ("POST", "/ui/audit/person-report"): (
        "person_access_report",
        AUDITOR,
        {"national_number": "85.07.30-033.28", "lang": "de"},
    ),
    ("GET", "/ui/audit/figures"): ("search_audit", AUDITOR, None),
    ("GET", "/ui/audit/figures/{figure}"): ("search_audit", AUDITOR, None),
}
UI_QUERIES = {
    "/ui/audit/explain": "?role=prosecutor&sector=justice&relation=referrer&subject=clinical",
}


def test_every_ui_route_has_a_row(app: FastAPI) -> None:
    served = {(r.method, r.path) for r in walk_routes(app) if r.path.startswith("/ui/")}
    table = set(UI_ROUTES) | set(UI_NO_DECISION)
    assert served - table == set(), "UI routes without a row in UI_ROUTES or UI_NO_DECISION"
    assert table - served == set(), "rows for UI routes the app does not serve"


@pytest.mark.parametrize(("method", "path"), sorted(UI_ROUTES), ids=str)
async def test_every_ui_route_takes_an_audited_policy_decision(
    app: FastAPI,
    api: httpx.AsyncClient,
    minter: TokenMinter,
    engine: Engine,
    method: str,
    path: str,
) -> None:
    action, caller, form = UI_ROUTES[(method, path)]
    j = Journey(api, minter)
    await j.create()
    if form == {}:
        form = referral_form(str(uuid.uuid4()))
    with Session(engine) as s:
        last = s.exec(select(func.max(AuditEntry.index))).one()
    url = path.replace(RID, str(j.id)).replace("{pseudonym}", "rp_" + "0" * 32)
    url = url.replace("{figure}", "denials")
    async with WebUser(app, minter, caller) as user:
        if method == "GET":
            resp = await user.get(url + UI_QUERIES.get(path, ""))
        else:
            resp = await user.post(url, form)
    assert resp.status_code < 500, main_of(resp.text)[:800]
    with Session(engine) as s:
        entries = s.exec(select(AuditEntry).where(AuditEntry.index > last)).all()
    # each API access the page makes leaves one entry holding its decision and outcome
    decisions = [e for e in entries if e.actor_organisation == caller[0]]
    assert decisions, [(e.event_type, e.action) for e in entries]
    assert action  # the policy action the page decides (the table documents it)
    assert all(e.decision in {"permit", "deny"} and e.outcome for e in decisions), [
        (e.action, e.decision, e.outcome) for e in decisions
    ]
    if decisions[0].decision == "deny":
        assert resp.status_code in (403, 404), resp.status_code
        assert decisions[0].outcome == "refused" and decisions[0].categories == []
    else:
        assert resp.status_code in (200, 303, 409), resp.status_code


async def test_an_expired_session_leads_to_the_login_and_is_forgotten(
    app: FastAPI, api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    async with WebUser(app, minter, OFFICE) as office:
        secret = office.client.cookies["referral_session"]
        store = app.state.sessions
        session = store.load(secret)
        assert session is not None
        # the access token expired and there is no refresh token: log in again
        store.save(secret, {**session, "expires_at": 0})
        resp = await office.get("/ui/justice")
        assert resp.status_code == 303 and resp.headers["location"].startswith("/login?next=")
        assert store.load(secret) is None
        # a form sent on a dead session changes nothing and leads to the login too
        resp = await office.post("/ui/referrals", referral_form(str(uuid.uuid4())))
        assert resp.status_code == 303 and resp.headers["location"].startswith("/login")


async def test_each_role_is_offered_its_own_pages_only(
    app: FastAPI, api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    """A page of another role's area answers 403 ('no work area'), not a form whose POST
    is then refused; and a provider's "ended cases" lists only referrals that ended."""
    j = Journey(api, minter)
    await j.create()  # awaiting consent: open, and no provider's case yet
    async with WebUser(app, minter, CGG) as cgg, WebUser(app, minter, OFFICE) as office:
        for path in ("/ui/justice", "/ui/referrals/new"):
            resp = await cgg.get(path)
            assert resp.status_code == 403, (path, resp.status_code)
            assert 'name="national_number"' not in resp.text
        resp = await office.get("/ui/care")
        assert resp.status_code == 403
        assert (await office.get("/ui/justice")).status_code == 200
        assert (await office.get("/ui/referrals/new")).status_code == 200
        care = await cgg.get("/ui/care")
        assert care.status_code == 200
        if 'id="ended-h"' in care.text:
            ended = care.text.split('id="ended-h"', 1)[1]
            for open_stage in ("awaiting_consent", "matching", "referred_to_care"):
                assert f"stage-{open_stage}" not in ended
        assert f"/ui/referrals/{j.id}" not in care.text
