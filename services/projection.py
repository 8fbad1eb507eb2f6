"""The SQL read projection of referrals: applying workflow snapshots idempotently."""

from __future__ import annotations

from sqlmodel import Session, select

from services import consent
from services.lifecycle import Snapshot
from services.models import Referral, StatusHistory, utcnow


def apply_snapshot(*, session: Session, snapshot: Snapshot, reason: str) -> bool:
    """Record one state change; a replayed or retried version changes nothing."""
    seen = session.exec(
        select(StatusHistory).where(
            StatusHistory.referral_id == snapshot.referral_id,
            StatusHistory.version == snapshot.version,
        )
    ).first()
    if seen is not None:
        return False
    at = snapshot.updated_at or utcnow()
    session.add(
        StatusHistory(
            referral_id=snapshot.referral_id,
            version=snapshot.version,
            stage=snapshot.stage.value,
            status=snapshot.status.value,
            business_status=snapshot.business_status,
            reason=reason[:64],
            at=at,
        )
    )
    referral = session.get(Referral, snapshot.referral_id, with_for_update=True)
    if referral is None:
        raise LookupError("referral projection row missing")
    if snapshot.version > referral.version:
        referral.version = snapshot.version
        referral.stage = snapshot.stage.value
        referral.status = snapshot.status.value
        referral.business_status = snapshot.business_status
        referral.offered_provider = snapshot.offered_provider
        referral.accepted_provider = snapshot.accepted_provider
        referral.providers_tried = list(snapshot.providers_tried)
        referral.outcome = snapshot.outcome.value if snapshot.outcome else None
        referral.decision = snapshot.decision.value if snapshot.decision else None
        referral.reporting_consent = snapshot.reporting_consent
        referral.consent_deadline = snapshot.consent_deadline
        referral.offer_expires_at = snapshot.offer_expires_at
        referral.next_progress_report_due = snapshot.next_progress_report_due
        referral.decision_due = snapshot.decision_due
        referral.purge_at = snapshot.purge_at
        referral.updated_at = at
        session.add(referral)
    if reason == "consent_expired":
        # the workflow ended the referral because the consent's validity ended: the stored
        # consent says so too (reads also store it, whichever comes first)
        consent.expire_lapsed(session=session, referral_id=snapshot.referral_id, at=at)
    return True
