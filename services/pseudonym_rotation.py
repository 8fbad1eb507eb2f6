"""Rotating the pseudonym key: re-derive the stored pseudonyms, then retire the old version.

`KeyRing.rotate_pseudonym_key` makes a new version current: new referrals and new keyed
fingerprints use it at once. `rederive` then recomputes the pseudonyms of every referral not
purged from its sealed identity (opened through the vault), in batches, one transaction
each. Each update is conditional on the row being as it was read, so a concurrent purge
wins; a run that was interrupted is simply run again (what is done is not done twice).

Keyed fingerprints cannot be re-derived (the request body and the form's reference are not
kept): they are checked against every live version until they expire (request
fingerprints) or the referral is purged (evidence fingerprints). `retire` destroys an old
version only when nothing made with it is left (`still_using`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import Session, col, func, select

from services.crypto import KeyRing, PersonalDataVault, Pseudonymizer
from services.crypto.errors import DecryptionError, KeyRingError
from services.models import Consent, IdempotencyRecord, Referral, StepAnswer, utcnow
from services.unlinking import UNLINKED

IDENTITY_FIELDS = ("identity.national_number", "identity.name", "identity.birth_date")


@dataclass(frozen=True)
class Rederived:
    """What a run did (counts only: nothing of a person)."""

    key_id: str
    rederived: int
    # not purged, but their identity can no longer be opened (shredded): they keep the
    # pseudonyms of the old version, which then cannot be retired
    unreadable: int


def rederive(
    *, session: Session, vault: PersonalDataVault, keyring: KeyRing, batch_size: int = 200
) -> Rederived:
    """Re-derive, under the current pseudonym key, the pseudonyms of every referral not
    purged that another version (or no recorded version) made; commits each batch."""
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    key_id, key = keyring.pseudonym_keys()[0]
    pseudonyms = Pseudonymizer(key, key_id)
    done = unreadable = 0
    after: uuid.UUID | None = None
    while True:
        query = select(
            Referral.id, Referral.pseudonym_key_id, Referral.subject_pseudonym, Referral.personal
        ).where(
            col(Referral.subject_pseudonym) != UNLINKED,
            or_(col(Referral.pseudonym_key_id).is_(None), col(Referral.pseudonym_key_id) != key_id),
        )
        if after is not None:
            query = query.where(col(Referral.id) > after)
        batch = session.exec(query.order_by(col(Referral.id)).limit(batch_size)).all()
        if not batch:
            return Rederived(key_id=key_id, rederived=done, unreadable=unreadable)
        for referral_id, old_key_id, old_subject, personal in batch:
            sealed = {name: personal[name] for name in IDENTITY_FIELDS if name in personal}
            if len(sealed) != len(IDENTITY_FIELDS):
                unreadable += 1
                continue
            try:
                identity = vault.open_record(
                    session=session, referral_id=referral_id, fields=sealed
                )
                subject = pseudonyms.national_number(identity["identity.national_number"])
                name = pseudonyms.name_and_birth_date(
                    identity["identity.name"],
                    datetime.fromisoformat(identity["identity.birth_date"]).date(),
                )
            except (DecryptionError, ValueError):
                unreadable += 1
                continue
            same_version = (
                col(Referral.pseudonym_key_id).is_(None)
                if old_key_id is None
                else col(Referral.pseudonym_key_id) == old_key_id
            )
            result = session.exec(
                update(Referral)
                .where(
                    col(Referral.id) == referral_id,
                    same_version,
                    col(Referral.subject_pseudonym) == old_subject,
                )
                .values(subject_pseudonym=subject, name_pseudonym=name, pseudonym_key_id=key_id)
            )
            done += result.rowcount
        # short transactions keep writers unblocked while the system runs
        session.commit()
        after = batch[-1][0]


@dataclass(frozen=True)
class StillUsing:
    """What a pseudonym key version still keys (counts): it may be retired when all are 0."""

    pseudonyms: int
    request_fingerprints: int
    evidence_fingerprints: int

    @property
    def anything(self) -> bool:
        return bool(self.pseudonyms or self.request_fingerprints or self.evidence_fingerprints)


def still_using(
    *, session: Session, keyring: KeyRing, key_id: str, request_ttl: timedelta
) -> StillUsing:
    """What the version `key_id` made that is still stored and must still match: pseudonyms of
    referrals not purged (made with it, or before versions were recorded), and the
    fingerprints made while it was current that have not expired or been unlinked."""
    made_from = keyring.pseudonym_key_created_at(key_id)
    later = [
        keyring.pseudonym_key_created_at(other)
        for other, _ in keyring.pseudonym_keys()
        if other != key_id and keyring.pseudonym_key_created_at(other) > made_from
    ]
    made_until = min(later) if later else None
    now = utcnow()

    def made_while_current(column: Any) -> list[Any]:
        conditions = [column >= made_from]
        if made_until is not None:
            conditions.append(column < made_until)
        return conditions

    pseudonyms = session.exec(
        select(func.count())
        .select_from(Referral)
        .where(
            col(Referral.subject_pseudonym) != UNLINKED,
            or_(col(Referral.pseudonym_key_id).is_(None), col(Referral.pseudonym_key_id) == key_id),
        )
    ).one()
    created = session.exec(
        select(func.count())
        .select_from(IdempotencyRecord)
        .where(
            col(IdempotencyRecord.created_at) > now - request_ttl,
            *made_while_current(col(IdempotencyRecord.created_at)),
        )
    ).one()
    steps = session.exec(
        select(func.count())
        .select_from(StepAnswer)
        .where(
            col(StepAnswer.expires_at) > now,
            *made_while_current(col(StepAnswer.created_at)),
        )
    ).one()
    evidence = session.exec(
        select(func.count())
        .select_from(Consent)
        .where(
            col(Consent.evidence_hash) != UNLINKED,
            *made_while_current(col(Consent.valid_from)),
        )
    ).one()
    return StillUsing(
        pseudonyms=int(pseudonyms),
        request_fingerprints=int(created) + int(steps),
        evidence_fingerprints=int(evidence),
    )


class KeyVersionInUse(KeyRingError):
    """A pseudonym key version that something stored still needs cannot be retired."""

    def __init__(self, using: StillUsing) -> None:
        super().__init__(
            "the pseudonym key version is still in use: "
            f"{using.pseudonyms} referrals' pseudonyms (run rederive), "
            f"{using.request_fingerprints} request fingerprints (they expire), "
            f"{using.evidence_fingerprints} consent evidence fingerprints (until purged)"
        )
        self.using = using


def retire(*, session: Session, keyring: KeyRing, key_id: str, request_ttl: timedelta) -> None:
    """Destroy the pseudonym key version `key_id`; refused (`KeyVersionInUse`) while
    anything stored still needs it, and for the current version."""
    if key_id == keyring.current_pseudonym_key_id():
        raise KeyRingError("the current pseudonym key cannot be retired")
    using = still_using(session=session, keyring=keyring, key_id=key_id, request_ttl=request_ttl)
    if using.anything:
        raise KeyVersionInUse(using)
    keyring.retire_pseudonym_key(key_id)
