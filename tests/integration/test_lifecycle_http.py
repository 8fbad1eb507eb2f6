"""The full lifecycle through the HTTP API, on the real Temporal dev server and database."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from services.models import Referral
from tests.integration.journey import (
    CGG,
    CLINICAL_NOTE,
    FREE_CLINIC,
    OFFICE,
    OTHER_OFFICE,
    PERSON,
    WELFARE_NOTE,
    Journey,
    consent_body,
    new_referral,
)
from tests.tokens import TokenMinter


async def test_full_lifecycle_over_http(api: httpx.AsyncClient, minter: TokenMinter) -> None:
    j = Journey(api, minter)
    view = await j.create()
    assert view["stage"] == "awaiting_consent"
    assert view["content"]["identity"]["name"] == PERSON["name"]  # the office's own referral

    view = await j.step(OFFICE, "consent", consent_body())
    view = await j.wait_stage("offered")
    assert view["offered_provider"] == "cgg-antwerpen"

    # the offered provider sees what it needs to decide, not the person's identity
    offered = await j.view(CGG)
    assert "identity" not in offered["content"]
    assert {w["category"] for w in offered["withheld"]} >= {"identity", "clinical"}

    view = await j.step(CGG, "accept")
    assert view["stage"] == "accepted"
    view = await j.step(CGG, "intake", {"intake_date": "2026-11-28T10:00:00+00:00"})
    assert view["stage"] == "in_progress"
    view = await j.step(
        CGG,
        "progress",
        {"attendance": "attending", "clinical_note": CLINICAL_NOTE, "welfare_note": WELFARE_NOTE},
    )
    assert view["content"]["clinical"]["note"] == CLINICAL_NOTE  # the care team sees its notes
    view = await j.step(CGG, "close", {"outcome": "completed"})

    office_view = await j.wait_stage("outcome_reported")
    facts = [f["fact"] for f in office_view["content"]["compliance"]["facts"]]
    assert facts == ["registered", "started", "attending", "completed"]
    assert "clinical" not in office_view["content"] and "welfare" not in office_view["content"]
    text = str(office_view)
    assert CLINICAL_NOTE not in text and WELFARE_NOTE not in text

    view = await j.step(OFFICE, "decision", {"decision": "dismissed"})
    assert view["stage"] == "closed" and view["decision"] == "dismissed"


async def test_list_shows_only_the_callers_organisation(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    mine = Journey(api, minter)
    await mine.create()
    theirs = Journey(api, minter)
    await theirs.create(OTHER_OFFICE, district="brussel", language="fr")

    page = await mine.call(OFFICE, "GET", "/api/v1/referrals?limit=100")
    ids = {item["id"] for item in page["items"]}
    assert mine.id in ids and theirs.id not in ids
    assert all(item["referring_office"] == "parket-antwerpen" for item in page["items"])
    page = await mine.call(OFFICE, "GET", "/api/v1/referrals?limit=1&offset=0")
    assert len(page["items"]) == 1 and page["total"] >= 1

    # another office does not even learn that the referral exists
    await mine.call(OTHER_OFFICE, "GET", f"/api/v1/referrals/{mine.id}", expect=404)
    # a provider it was never offered to neither
    await mine.call(FREE_CLINIC, "GET", f"/api/v1/referrals/{mine.id}", expect=404)


async def test_idempotency_key_returns_the_same_referral(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    headers = {**minter.headers(*OFFICE), "Idempotency-Key": f"idem-{uuid.uuid4()}"}
    first = await api.post("/api/v1/referrals", json=new_referral(), headers=headers)
    assert first.status_code == 201
    with Session(engine) as s:
        before = s.exec(select(func.count()).select_from(Referral)).one()
    again = await api.post("/api/v1/referrals", json=new_referral(), headers=headers)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = await api.post("/api/v1/referrals", json=new_referral(language="fr"), headers=headers)
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(Referral)).one() == before


async def test_withdrawal_ends_the_referral_and_tells_the_office_only_that(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    j = Journey(api, minter)
    await j.to_in_progress()
    await j.step(CGG, "progress", {"attendance": "attending", "clinical_note": CLINICAL_NOTE})
    view = await j.step(CGG, "consent/withdraw")
    await j.step(CGG, "progress", {"attendance": "attending"}, expect=409)
    office_view = await j.wait_stage("outcome_reported")
    assert office_view["process_facts"][-1]["fact"] == "consent_withdrawn"
    assert "compliance" not in office_view["content"]
    assert CLINICAL_NOTE not in str(office_view) and view is not None


async def test_illegal_steps_are_refused_with_problem_json(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    j = Journey(api, minter)
    await j.create()
    await j.step(OFFICE, "consent", consent_body())
    await j.wait_stage("offered")
    # the office may not accept in the provider's place: policy says 403
    resp = await api.post(f"/api/v1/referrals/{j.id}/accept", headers=minter.headers(*OFFICE))
    assert resp.status_code == 403
    assert resp.headers["content-type"] == "application/problem+json"
    await j.step(CGG, "accept")
    resp = await api.post(f"/api/v1/referrals/{j.id}/accept", headers=minter.headers(*CGG))
    assert resp.status_code in (403, 409)
    resp = await api.post(
        f"/api/v1/referrals/{j.id}/close",
        json={"outcome": "completed"},
        headers=minter.headers(*CGG),
    )
    assert resp.status_code == 409, resp.text
    body = resp.json()
    assert body["status"] == 409 and "stage" in body["detail"]
