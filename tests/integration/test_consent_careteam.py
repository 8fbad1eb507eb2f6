"""Consent, complete, and the care team as people, through the HTTP API on the real Temporal
dev server and database:

- who may receive the data and who may pass it on are enforced (a consent limited to the
  welfare sector gives a health provider nothing);
- how the consent was signed is stored and shown; a consent in incomplete form is refused;
- a consent whose validity ended is stored and shown as `expired`;
- a withdrawal after the care ended is stored, stops the care team's access at once, and is
  decided and audited;
- only care workers the intake coordinator assigned see the case's content; assignment and
  release are decided and audited; the care team records a consent version only within care.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from services.audit.models import AuditEntry
from services.models import Consent
from tests.integration.journey import (
    CGG,
    CGG_WORKER,
    CLINICAL_NOTE,
    OFFICE,
    WELFARE_NOTE,
    Journey,
    consent_body,
)
from tests.tokens import TokenMinter

pytestmark = pytest.mark.integration

WORKER_SUBJECT = "user-care_worker-cgg-antwerpen"  # the subject CGG_WORKER's tokens carry
CONTENT = {"identity", "contact", "judicial_context", "referral_reason", "clinical", "welfare"}


async def _in_care_with_notes(j: Journey, **consent: Any) -> None:
    await j.create()
    await j.step(OFFICE, "consent", consent_body(**consent))
    await j.wait_stage("offered")
    await j.step(CGG, "accept")
    await j.step(CGG, "intake", {"intake_date": datetime.now(UTC).isoformat()})
    await j.step(
        CGG,
        "progress",
        {"attendance": "attending", "clinical_note": CLINICAL_NOTE, "welfare_note": WELFARE_NOTE},
    )


def _entries(engine: Engine, action: str) -> list[AuditEntry]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(AuditEntry)
                .where(AuditEntry.action == action)
                .order_by(col(AuditEntry.index))
            ).all()
        )


# ---- the care team is people -------------------------------------------------------------


async def test_only_assigned_care_workers_see_the_content(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    j = Journey(api, minter)
    await _in_care_with_notes(j)

    # an unassigned colleague of the provider sees the process, not the content
    unassigned = await j.view(CGG_WORKER)
    # the exact stage: the care team follows the case it runs (lifecycle.permit-care-team-
    # follows-stage), though the compliance category is withheld from the unassigned
    assert unassigned["stage"] == "in_progress"
    assert not set(unassigned["content"]) & CONTENT
    assert CLINICAL_NOTE not in str(unassigned) and WELFARE_NOTE not in str(unassigned)
    # the intake coordinator sees it without being assigned
    assert (await j.view(CGG))["content"]["clinical"]["note"] == CLINICAL_NOTE

    # a care worker cannot put themselves on the case, nor can the referring office
    await j.call(
        CGG_WORKER,
        "POST",
        f"/api/v1/referrals/{j.id}/care-team",
        {"subject": WORKER_SUBJECT},
        expect=403,
    )
    await j.call(
        OFFICE,
        "POST",
        f"/api/v1/referrals/{j.id}/care-team",
        {"subject": WORKER_SUBJECT},
        expect=403,
    )
    assert (await j.view(CGG_WORKER))["content"].get("clinical") is None

    team = await j.call(
        CGG, "POST", f"/api/v1/referrals/{j.id}/care-team", {"subject": WORKER_SUBJECT}
    )
    assert [m["subject"] for m in team] == [WORKER_SUBJECT]
    # assigning twice changes nothing
    again = await j.call(
        CGG, "POST", f"/api/v1/referrals/{j.id}/care-team", {"subject": WORKER_SUBJECT}
    )
    assert again == team
    assigned = await j.view(CGG_WORKER)
    assert assigned["content"]["clinical"]["note"] == CLINICAL_NOTE
    assert assigned["content"]["welfare"]["note"] == WELFARE_NOTE
    assert assigned["content"]["identity"]

    team = await j.call(CGG, "POST", f"/api/v1/referrals/{j.id}/care-team/{WORKER_SUBJECT}/release")
    assert team == []
    released = await j.view(CGG_WORKER)
    assert not set(released["content"]) & CONTENT  # at once
    # releasing someone who is not assigned is refused and changes nothing
    await j.call(
        CGG, "POST", f"/api/v1/referrals/{j.id}/care-team/{WORKER_SUBJECT}/release", expect=404
    )

    # one audit entry per access (IHE BALP), with the decision and the deciding policies
    changes = [
        e
        for action in ("referral.assign_care_worker", "referral.release_care_worker")
        for e in _entries(engine, action)
    ]
    permits = [
        e
        for e in changes
        if e.actor_subject == "user-intake_coordinator-cgg-antwerpen"
        and e.decision == "permit"
        and e.outcome == "success"
    ]
    assert {e.action for e in permits} == {
        "referral.assign_care_worker",
        "referral.release_care_worker",
    }
    assert {tuple(p.policy_ids) for p in permits} == {
        ("lifecycle.permit-intake-coordinator-assigns-care-team",)
    }
    denied = [
        e
        for e in changes
        if e.actor_subject == WORKER_SUBJECT and e.decision == "deny" and e.outcome == "refused"
    ]
    assert denied


async def test_a_subject_id_is_not_a_name(api: httpx.AsyncClient, minter: TokenMinter) -> None:
    j = Journey(api, minter)
    await _in_care_with_notes(j)
    for subject in ("Jan Peeters", "jan.peeters@cgg.example", ""):
        resp = await api.post(
            f"/api/v1/referrals/{j.id}/care-team",
            json={"subject": subject},
            headers=j.headers(CGG),
        )
        assert resp.status_code == 422, subject
        assert resp.headers["content-type"].startswith("application/problem+json")
    assert await j.call(CGG, "GET", f"/api/v1/referrals/{j.id}/care-team") == []


# ---- recipients and disclosers ------------------------------------------------------------


async def test_a_consent_limited_to_welfare_gives_a_health_provider_nothing(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    j = Journey(api, minter)
    await j.create()
    await j.step(OFFICE, "consent", consent_body(recipients=["welfare", "parket-antwerpen"]))
    view = await j.wait_stage("offered")
    assert view["offered_provider"] == "cgg-antwerpen"  # a health provider
    offered = await j.view(CGG)
    assert not set(offered["content"]) & CONTENT
    assert {w["category"] for w in offered["withheld"]} >= {"referral_reason", "judicial_context"}
    # the same case, with the provider named by its organisation code: it sees the reason
    await j.step(OFFICE, "consent", consent_body(recipients=["cgg-antwerpen", "parket-antwerpen"]))
    assert (await j.view(CGG))["content"]["referral_reason"]


async def test_without_justice_as_discloser_the_provider_gets_nothing_of_the_file(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    j = Journey(api, minter)
    await _in_care_with_notes(j, disclosers=["health", "welfare"])
    view = await j.view(CGG)
    assert not {"identity", "contact", "judicial_context", "referral_reason"} & set(view["content"])
    # what the provider itself recorded still flows inside it: it may disclose that
    assert view["content"]["clinical"]["note"] == CLINICAL_NOTE


# ---- how the consent was signed ---------------------------------------------------------


async def test_the_signature_is_stored_and_shown(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    j = Journey(api, minter)
    await j.create()
    signed_on = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    await j.step(
        OFFICE,
        "consent",
        consent_body(
            signed_by="legal_representative",
            signer_capacity="guardian",
            signed_on=signed_on,
            signing_method="verbal_with_witness",
        ),
    )
    [shown] = await j.call(OFFICE, "GET", f"/api/v1/referrals/{j.id}/consents")
    assert shown["signed_by"] == "legal_representative"
    assert shown["signer_capacity"] == "guardian"
    assert shown["signed_on"] == signed_on
    assert shown["signing_method"] == "verbal_with_witness"
    assert shown["right_to_revoke_explained"] is True
    with Session(engine) as session:
        stored = session.get(Consent, uuid.UUID(shown["id"]))
        assert stored is not None and stored.signer_capacity == "guardian"


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("no signer", {"signed_by": None}),
        ("no capacity", {"signer_capacity": None}),
        ("person signs as parent", {"signer_capacity": "parent"}),
        ("representative signs as self", {"signed_by": "legal_representative"}),
        ("no signing date", {"signed_on": None}),
        (
            "signed tomorrow",
            {"signed_on": (datetime.now(UTC) + timedelta(days=2)).date().isoformat()},
        ),
        ("no method", {"signing_method": None}),
        ("unknown method", {"signing_method": "telepathy"}),
        ("a signer's name", {"signed_by": "Jan Peeters"}),
    ],
)
async def test_a_consent_in_incomplete_form_is_refused_and_changes_nothing(
    api: httpx.AsyncClient, minter: TokenMinter, case: str, change: dict[str, Any]
) -> None:
    j = Journey(api, minter)
    await j.create()
    resp = await api.post(
        f"/api/v1/referrals/{j.id}/consent",
        json=consent_body(**change),
        headers=j.headers(OFFICE),
    )
    assert resp.status_code == 422, (case, resp.text)
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert await j.call(OFFICE, "GET", f"/api/v1/referrals/{j.id}/consents") == []
    assert (await j.view())["stage"] == "awaiting_consent"


# ---- expiry -------------------------------------------------------------------------------


async def test_an_expired_consent_is_stored_and_shown_as_expired(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    j = Journey(api, minter)
    await j.create()
    until = datetime.now(UTC) + timedelta(seconds=3)
    await j.step(OFFICE, "consent", consent_body(valid_until=until.isoformat()))
    await asyncio.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.5)
    shown = await j.call(OFFICE, "GET", f"/api/v1/referrals/{j.id}/consents")
    assert [c["status"] for c in shown] == ["expired"]
    with Session(engine) as session:
        stored = session.get(Consent, uuid.UUID(shown[0]["id"]))
        assert stored is not None and stored.status == "expired"


# ---- withdrawal after the care ended ------------------------------------------------------


async def test_a_withdrawal_after_the_end_stops_the_care_teams_access(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    j = Journey(api, minter)
    await _in_care_with_notes(j)
    await j.call(CGG, "POST", f"/api/v1/referrals/{j.id}/care-team", {"subject": WORKER_SUBJECT})
    await j.step(CGG, "close", {"outcome": "completed"})
    await j.wait_stage("outcome_reported")
    assert (await j.view(CGG_WORKER))["content"]["clinical"]["note"] == CLINICAL_NOTE
    assert (await j.view(OFFICE))["content"]["compliance"]

    view = await j.step(OFFICE, "consent/withdraw")
    assert view["stage"] == "outcome_reported"  # the process goes on: only the consent ends
    for party in (CGG, CGG_WORKER):
        after = await j.view(party)
        assert not set(after["content"]) & CONTENT, party
        assert CLINICAL_NOTE not in str(after)
    assert "compliance" not in (await j.view(OFFICE))["content"]
    consents = await j.call(OFFICE, "GET", f"/api/v1/referrals/{j.id}/consents")
    assert [c["status"] for c in consents] == ["withdrawn"]
    assert consents[0]["withdrawn_at"] is not None
    # once withdrawn, there is nothing left to withdraw
    await j.step(OFFICE, "consent/withdraw", expect=409)
    # decided by the policies and audited
    permits = [
        e
        for e in _entries(engine, "referral.withdraw_consent")
        if e.decision == "permit" and e.outcome == "success" and e.actor_organisation == OFFICE[0]
    ]
    assert permits and permits[-1].policy_ids == [
        "lifecycle.permit-referring-office-records-consent"
    ]


async def test_after_the_end_an_outsider_learns_nothing_from_a_withdrawal(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    j = Journey(api, minter)
    await _in_care_with_notes(j)
    await j.step(CGG, "close", {"outcome": "completed"})
    await j.wait_stage("outcome_reported")
    await j.step(("parquet-bruxelles", "prosecutor"), "consent/withdraw", expect=404)
    await j.step(("free-clinic-antwerpen", "care_worker"), "consent/withdraw", expect=404)
    assert (await j.view(CGG))["content"]["clinical"]["note"] == CLINICAL_NOTE


# ---- who records a consent version --------------------------------------------------------


async def test_the_care_team_records_a_version_only_within_care(
    api: httpx.AsyncClient, minter: TokenMinter
) -> None:
    j = Journey(api, minter)
    until = (datetime.now(UTC) + timedelta(days=200)).isoformat()
    await _in_care_with_notes(j, valid_until=until)
    # wider toward justice: refused, nothing changes
    await j.step(
        CGG,
        "consent",
        consent_body(
            valid_until=until, recipients=["health", "welfare", "parket-antwerpen", "caw-brussel"]
        ),
        expect=403,
    )
    # for longer: refused
    later = (datetime.now(UTC) + timedelta(days=300)).isoformat()
    await j.step(CGG, "consent", consent_body(valid_until=later), expect=403)
    # an unassigned care worker records nothing
    await j.step(CGG_WORKER, "consent", consent_body(valid_until=until), expect=403)
    assert len(await j.call(OFFICE, "GET", f"/api/v1/referrals/{j.id}/consents")) == 1
    # narrower (no more progress reporting to justice): the intake coordinator records it
    await j.step(CGG, "consent", consent_body(valid_until=until, reporting=False))
    versions = await j.call(OFFICE, "GET", f"/api/v1/referrals/{j.id}/consents")
    assert [(c["version"], c["status"]) for c in versions] == [(1, "superseded"), (2, "active")]
    assert "progress_reporting_to_justice" not in versions[1]["purposes"]
