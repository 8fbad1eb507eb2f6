"""The two retention clocks of a referral: what the office holds is kept for the framework's
justice period, the care data for its care period, and each is shredded at its own time.

Each shredding is one audit entry (a delete by the retention clock), stored in the same
transaction as the shredding itself: both happen, or neither. A retry finds the holding
shredded and does nothing, so it writes no second entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from sqlalchemy import delete
from sqlmodel import Session, col, select

from services import unlinking
from services.access import Gatekeeper
from services.audit.events import shred_event
from services.audit.models import AuditEvent
from services.case_content import FIELD_CATEGORY
from services.crypto.payload_keys import ReferralPayloadKeys
from services.lifecycle import DataHolding
from services.models import JusticeMessage, Organisation, Referral, utcnow
from services.principal import Principal, Sector

RETENTION_SUBJECT = "system:retention-clock"

# Sealed fields by the holding that keeps them (ARCHITECTURE.md, 'Data categories').
CARE_CATEGORIES = frozenset({"clinical", "welfare"})
OFFICE_CATEGORIES = frozenset({"identity", "contact", "judicial_context", "referral_reason"})
_HOLDING_CATEGORIES = {DataHolding.CARE: CARE_CATEGORIES, DataHolding.OFFICE: OFFICE_CATEGORIES}


class Shredder(Protocol):
    """Destroys a referral's data key (crypto-shredding), and says whether it is gone."""

    def shred(self, *, session: Session, referral_id: UUID) -> None: ...

    def is_shredded(self, *, session: Session, referral_id: UUID) -> bool: ...


class ShredFailed(RuntimeError):
    """The shredder left the referral's data key in place: nothing may be called purged."""


def _holding_done(referral: Referral, holding: DataHolding) -> bool:
    if holding is DataHolding.CARE:
        return referral.care_purged_at is not None
    return referral.office_purged_at is not None


@dataclass(frozen=True)
class _Shredded:
    """What one transaction shredded, for its audit entry."""

    actor: Principal
    action: str
    categories: tuple[str, ...]
    person_tag: str | None  # the person's (`Gatekeeper.person_tag`), taken before the key goes


def _shred_holding(*, session: Session, referral: Referral, holding: DataHolding) -> list[str]:
    """Drop one holding's data from the store; returns the categories it held."""
    categories = _HOLDING_CATEGORIES[holding]
    shredded = {FIELD_CATEGORY.get(name, "") for name in referral.personal} & categories
    referral.personal = {
        name: token
        for name, token in referral.personal.items()
        if FIELD_CATEGORY.get(name) not in categories
    }
    now = utcnow()
    if holding is DataHolding.CARE:
        referral.care_purged_at = now
    else:
        # the compliance facts sent to the office end with the office's period
        removed = session.exec(
            delete(JusticeMessage).where(col(JusticeMessage.referral_id) == referral.id)
        )
        if removed.rowcount:
            shredded.add("compliance")
        referral.office_purged_at = now
    return sorted(shredded)


def _clock(*, session: Session, referral: Referral, holding: DataHolding | None) -> Principal:
    """The retention clock, acting for the holder whose period ended (no person acts)."""
    if holding is DataHolding.CARE and referral.accepted_provider is not None:
        provider = session.exec(
            select(Organisation).where(Organisation.code == referral.accepted_provider)
        ).first()
        sector = Sector(provider.sector) if provider is not None else Sector.HEALTH
        organisation = referral.accepted_provider
    else:
        sector, organisation = Sector.JUSTICE, referral.referring_office
    return Principal(
        subject=RETENTION_SUBJECT, organisation=organisation, sector=sector, roles=frozenset()
    )


def _destroy_key(
    *,
    session: Session,
    referral: Referral,
    shredder: Shredder,
    payload_keys: ReferralPayloadKeys | None,
) -> None:
    shredder.shred(session=session, referral_id=referral.id)
    if not shredder.is_shredded(session=session, referral_id=referral.id):
        raise ShredFailed("the shredder left the referral's data key in place")
    # nothing left may link back to the person: pseudonyms, fingerprints, payload key
    unlinking.unlink(session=session, referral_id=referral.id, payload_keys=payload_keys)
    referral.personal = {}
    referral.purged_at = utcnow()


def _audited(
    *, gatekeeper: Gatekeeper, referral_id: UUID, work: Callable[[Session], _Shredded | None]
) -> bool:
    """Run `work` and write its audit entry in one transaction; False: nothing was left."""

    def events(done: _Shredded | None) -> list[AuditEvent]:
        if done is None:
            return []
        return [
            shred_event(
                gatekeeper,
                referral_id=referral_id,
                person_tag=done.person_tag,
                categories=done.categories,  # the categories the shredding touched
                action=done.action,
                subject=done.actor.subject,
                organisation=done.actor.organisation,
            )
        ]

    return gatekeeper.audit.append_with(work, events) is not None


def shred(*, gatekeeper: Gatekeeper, referral_id: UUID, holding: DataHolding) -> bool:
    """Shred what `holding` keeps, its clock having ended before the other's (audited).
    False: done before (a retry), or no such referral."""

    def work(session: Session) -> _Shredded | None:
        referral = session.get(Referral, referral_id)
        if referral is None or _holding_done(referral, holding):
            return None
        actor = _clock(session=session, referral=referral, holding=holding)
        person = gatekeeper.person_tag(referral_id, session)
        categories = _shred_holding(session=session, referral=referral, holding=holding)
        referral.updated_at = utcnow()
        session.add(referral)
        return _Shredded(actor, f"referral.shred_{holding.value}_data", tuple(categories), person)

    return _audited(gatekeeper=gatekeeper, referral_id=referral_id, work=work)


def purge(
    *,
    gatekeeper: Gatekeeper,
    shredder: Shredder,
    referral_id: UUID,
    holdings: Sequence[DataHolding] = (),
    payload_keys: ReferralPayloadKeys | None = None,
) -> bool:
    """The last clock ended: shred the holdings still kept, then destroy the referral's
    data key with the last of them, so nothing sealed for it can be opened again. One audit
    entry per holding. False: purged before (a retry), or no such referral."""
    pending = list(holdings or (DataHolding.CARE, DataHolding.OFFICE))
    purged = False
    for position, holding in enumerate(pending):
        last = position == len(pending) - 1

        def work(
            session: Session, holding: DataHolding = holding, last: bool = last
        ) -> _Shredded | None:
            referral = session.get(Referral, referral_id)
            if referral is None or referral.purged_at is not None:
                return None
            if _holding_done(referral, holding) and not last:
                return None
            actor = _clock(session=session, referral=referral, holding=holding)
            # the person's tag, while the referral's payload key that computes it is there
            person = gatekeeper.person_tag(referral_id, session)
            categories: list[str] = []
            if not _holding_done(referral, holding):
                categories = _shred_holding(session=session, referral=referral, holding=holding)
            if last:
                _destroy_key(
                    session=session,
                    referral=referral,
                    shredder=shredder,
                    payload_keys=payload_keys,
                )
            referral.updated_at = utcnow()
            session.add(referral)
            action = "referral.purge" if last else f"referral.shred_{holding.value}_data"
            return _Shredded(actor, action, tuple(categories), person)

        purged = _audited(gatekeeper=gatekeeper, referral_id=referral_id, work=work) or purged
    return purged
