"""The intent to start a referral's workflow, stored with the referral itself.

Create stores the referral, its audit entry and this intent in one transaction, then starts
the workflow; the reconciler on the worker starts every intent still pending, so a crash
between the commit and the start never leaves a referral without its process.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlmodel import Session, col, select

from services.models import WorkflowStart, utcnow


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
