"""Purging a referral at the end of its retention: crypto-shredding and its audit entry.

The data key is destroyed, the sealed fields dropped and the entry (event `delete`, purpose
RECORDMGT, the categories destroyed, the person's audit pseudonym) written in ONE transaction:
a purge is never unrecorded, and a recorded purge always happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from sqlalchemy import Engine
from sqlmodel import Session

from services.access import Gatekeeper
from services.audit.events import purge_event
from services.case_content import FIELD_CATEGORY
from services.db import session_scope
from services.models import Referral, utcnow


class Shredder(Protocol):
    def shred(self, *, session: Session, referral_id: UUID) -> None: ...


@dataclass(frozen=True)
class Purged:
    """What one purge destroyed (None fields: nothing, the referral was purged before)."""

    subject_pseudonym: str | None
    categories: tuple[str, ...]


def _shred(session: Session, shredder: Shredder | None, referral_id: UUID) -> Purged | None:
    referral = session.get(Referral, referral_id)
    if referral is None or referral.purged_at is not None:
        return None  # gone, or purged by an earlier try: recorded then
    categories = tuple(
        sorted({FIELD_CATEGORY[name] for name in referral.personal if name in FIELD_CATEGORY})
    )
    if shredder is not None:
        shredder.shred(session=session, referral_id=referral_id)
    referral.personal = {}
    referral.purged_at = utcnow()
    session.add(referral)
    return Purged(subject_pseudonym=referral.subject_pseudonym, categories=categories)


def purge_referral(
    *,
    engine: Engine,
    gatekeeper: Gatekeeper | None,
    shredder: Shredder | None,
    referral_id: UUID,
    reason: str = "retention",
) -> bool:
    """Crypto-shred one referral and record it; False when there was nothing (left) to purge.
    Without a gatekeeper (unit tests of the workflow) nothing is recorded."""
    if gatekeeper is None:
        with session_scope(engine) as session:
            return _shred(session, shredder, referral_id) is not None
    done = gatekeeper.audit.append_with(
        lambda session: _shred(session, shredder, referral_id),
        lambda purged: (
            []
            if purged is None
            else [
                purge_event(
                    gatekeeper,
                    referral_id=referral_id,
                    subject_pseudonym=purged.subject_pseudonym,
                    categories=purged.categories,
                    reason=reason,
                )
            ]
        ),
    )
    return done is not None
