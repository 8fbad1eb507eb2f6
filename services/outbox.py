"""Idempotent side effects of the lifecycle: workflow start intents, offers, notifications,
the channel to justice."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlmodel import Session, col, select

from services.lifecycle import ComplianceFact, ConsentPurpose, NotificationKind
from services.models import (
    Consent,
    JusticeMessage,
    Notification,
    Offer,
    WorkflowStart,
    utcnow,
)

# Every message on the channel to justice carries this notice (shared professional secrecy).
NO_REDISCLOSURE_NOTICE = (
    "Compliance information shared under a cooperation framework with the person's consent. "
    "It may not be disclosed further or used for any other purpose."
)


def intend_start(*, session: Session, referral_id: UUID) -> None:
    """Store the intent to start a referral's workflow, in the transaction that stores it."""
    session.add(WorkflowStart(referral_id=referral_id))


def pending_starts(*, session: Session, older_than: datetime, limit: int = 100) -> list[UUID]:
    """Referrals whose workflow start is still pending (stored before `older_than`)."""
    rows = session.exec(
        select(WorkflowStart.referral_id)
        .where(WorkflowStart.started_at == None, WorkflowStart.created_at < older_than)  # noqa: E711
        .order_by(col(WorkflowStart.created_at))
        .limit(limit)
    ).all()
    return list(rows)


def mark_started(*, session: Session, referral_id: UUID) -> None:
    """Record that the referral's workflow is running (or ran): nothing left to start."""
    row = session.get(WorkflowStart, referral_id)
    if row is not None and row.started_at is None:
        row.started_at = utcnow()
        row.attempts += 1
        session.add(row)


def create_offer(
    *, session: Session, referral_id: UUID, attempt: int, provider: str, expires_at: datetime
) -> bool:
    """Record the offer of attempt N; a retry finds it and creates nothing."""
    if session.get(Offer, (referral_id, attempt)) is not None:
        return False
    session.add(
        Offer(referral_id=referral_id, attempt=attempt, provider=provider, expires_at=expires_at)
    )
    return True


def notify(
    *, session: Session, key: str, referral_id: UUID, recipient: str, kind: NotificationKind
) -> bool:
    """Queue a notification once per key (referral id + step)."""
    if session.get(Notification, key) is not None:
        return False
    session.add(Notification(key=key, referral_id=referral_id, recipient=recipient, kind=kind))
    return True


def reporting_consent_active(*, session: Session, referral_id: UUID, at: datetime) -> bool:
    """Whether an active consent covers progress reporting to justice at `at`."""
    consents = session.exec(
        select(Consent).where(Consent.referral_id == referral_id, Consent.status == "active")
    ).all()
    for consent in consents:
        if ConsentPurpose.PROGRESS_REPORTING_TO_JUSTICE.value not in consent.purposes:
            continue
        if consent.withdrawn_at is not None and consent.withdrawn_at <= at:
            continue
        if consent.valid_until is not None and consent.valid_until <= at:
            continue
        return True
    return False


def report_to_justice(
    *,
    session: Session,
    key: str,
    referral_id: UUID,
    recipient: str,
    fact: ComplianceFact,
    needs_reporting_consent: bool,
) -> bool:
    """Put one typed compliance fact on the channel to the referring office."""
    if session.get(JusticeMessage, key) is not None:
        return False
    if needs_reporting_consent and not reporting_consent_active(
        session=session, referral_id=referral_id, at=utcnow()
    ):
        # consent is checked at every disclosure, not only when the workflow decided to send
        return False
    session.add(
        JusticeMessage(
            key=key,
            referral_id=referral_id,
            recipient=recipient,
            fact=ComplianceFact(fact).value,
            notice=NO_REDISCLOSURE_NOTICE,
        )
    )
    return True
