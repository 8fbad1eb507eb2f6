"""The care team of a case is people, not a whole organisation: the provider's intake
coordinator assigns care workers (by identity-provider subject id, never a name) and
releases them. Only assigned workers see the case's content (need to know); whether a
caller may assign or release is decided by the policies before these functions run."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from services.db import PreparedRead, read_rows
from services.errors import Conflict, NotFound
from services.lifecycle import OPEN_STAGES
from services.models import CareTeamAssignment, Referral, ReferralLike

# read at every access to an accepted case: built once (see `services.referrals`)
_ASSIGNED_SUBJECTS = PreparedRead(
    select(CareTeamAssignment.subject).where(
        CareTeamAssignment.referral_id == bindparam("referral_id"),
        CareTeamAssignment.organisation == bindparam("organisation"),
        col(CareTeamAssignment.released_at).is_(None),
    )
)


def assigned_subjects(*, session: Session, referral: ReferralLike) -> frozenset[str]:
    """The subjects currently assigned to the case by the provider that accepted it."""
    if referral.accepted_provider is None:
        return frozenset()
    params = {"referral_id": referral.id, "organisation": referral.accepted_provider}
    return frozenset(read_rows(session, _ASSIGNED_SUBJECTS, params).scalars())


def current(*, session: Session, referral: Referral) -> list[CareTeamAssignment]:
    """The assignments in force, oldest first."""
    if referral.accepted_provider is None:
        return []
    return list(
        session.exec(
            select(CareTeamAssignment)
            .where(
                CareTeamAssignment.referral_id == referral.id,
                CareTeamAssignment.organisation == referral.accepted_provider,
                col(CareTeamAssignment.released_at).is_(None),
            )
            .order_by(col(CareTeamAssignment.assigned_at))
        ).all()
    )


def _in_force(session: Session, referral: Referral, subject: str) -> CareTeamAssignment | None:
    return session.exec(
        select(CareTeamAssignment).where(
            CareTeamAssignment.referral_id == referral.id,
            CareTeamAssignment.organisation == referral.accepted_provider,
            CareTeamAssignment.subject == subject,
            col(CareTeamAssignment.released_at).is_(None),
        )
    ).first()


def assign(
    *, session: Session, referral: Referral, subject: str, by: str, at: datetime
) -> tuple[CareTeamAssignment, bool]:
    """Put `subject` on the case; returns the assignment and whether it is new. Only while
    care runs: after the end nobody new needs to know."""
    if referral.accepted_provider is None or referral.stage not in {s.value for s in OPEN_STAGES}:
        raise Conflict("care workers are assigned only while the care trajectory runs")
    existing = _in_force(session, referral, subject)
    if existing is not None:
        return existing, False
    assignment = CareTeamAssignment(
        referral_id=referral.id,
        organisation=referral.accepted_provider,
        subject=subject,
        assigned_by=by,
        assigned_at=at,
    )
    session.add(assignment)
    return assignment, True


def release(
    *, session: Session, referral: Referral, subject: str, by: str, at: datetime
) -> CareTeamAssignment:
    """Take `subject` off the case: their access to its content ends at once (also after
    the care ended)."""
    assignment = _in_force(session, referral, subject)
    if assignment is None:
        raise NotFound("this care worker is not assigned to the case")
    assignment.released_at = at
    assignment.released_by = by
    session.add(assignment)
    return assignment
