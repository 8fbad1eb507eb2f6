"""Consent of the person referred: record (a new version each time), withdraw, list."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlmodel import Session, col, select

from services.lifecycle import ConsentRecordInput, ConsentStatus
from services.models import Consent, utcnow


def record(*, session: Session, referral_id: UUID, inp: ConsentRecordInput) -> Consent:
    """Store a consent (or refusal) as the next version; earlier versions are superseded."""
    existing = session.get(Consent, inp.consent_id)
    if existing is not None:
        return existing  # a retried activity: already stored
    previous = session.exec(
        select(Consent).where(Consent.referral_id == referral_id).order_by(col(Consent.version))
    ).all()
    for old in previous:
        if old.status == ConsentStatus.ACTIVE.value:
            old.status = ConsentStatus.SUPERSEDED.value
            session.add(old)
    consent = Consent(
        id=inp.consent_id,
        referral_id=referral_id,
        version=(previous[-1].version + 1) if previous else 1,
        given=inp.given,
        purposes=[p.value for p in inp.purposes],
        categories=list(inp.categories),
        recipients=list(inp.recipients),
        disclosers=list(inp.disclosers),
        status=ConsentStatus.ACTIVE.value if inp.given else ConsentStatus.REFUSED.value,
        recorded_by=inp.actor.subject,
        recorded_by_organisation=inp.actor.organisation,
        evidence_hash=inp.evidence_hash,
        valid_from=inp.recorded_at or utcnow(),
        valid_until=inp.valid_until,
    )
    session.add(consent)
    return consent


def withdraw(*, session: Session, referral_id: UUID, withdrawn_at: datetime) -> int:
    """Withdraw every active consent of the referral at `withdrawn_at`; returns how many."""
    active = session.exec(
        select(Consent).where(
            Consent.referral_id == referral_id, Consent.status == ConsentStatus.ACTIVE.value
        )
    ).all()
    for consent in active:
        consent.status = ConsentStatus.WITHDRAWN.value
        consent.withdrawn_at = withdrawn_at
        session.add(consent)
    return len(active)


def list_for(*, session: Session, referral_id: UUID) -> list[Consent]:
    """Every consent version of a referral, oldest first."""
    return list(
        session.exec(
            select(Consent).where(Consent.referral_id == referral_id).order_by(col(Consent.version))
        ).all()
    )


def check_form(
    *,
    given: bool,
    purposes: list[str],
    categories: list[str],
    recipients: list[str],
    disclosers: list[str],
    right_to_revoke_explained: bool,
    valid_until: datetime | None,
    now: datetime,
) -> list[str]:
    """The parts a consent in valid form lacks (empty when it is complete)."""
    if not given:
        return []
    missing = []
    if "referral_to_care" not in purposes:
        missing.append("purpose referral_to_care")
    if not categories:
        missing.append("data categories")
    if not recipients:
        missing.append("recipients")
    if not disclosers:
        missing.append("who may disclose")
    if not right_to_revoke_explained:
        missing.append("the right to revoke, explained")
    if valid_until is None:
        missing.append("expiry")
    elif valid_until <= now:
        missing.append("an expiry in the future")
    return missing
