"""Nothing left links back: what the purge removes besides the sealed fields.

Crypto-shredding makes the sealed values unreadable; what stays must not lead back to the
person either. After `unlink` a purged referral keeps only process facts (stages, dates,
organisations, reason and fact codes) that the indicators count:

- its pseudonyms (keyed hashes of the national number and of name + birth date) are gone;
- its health-related target group is gone;
- its request fingerprints (the create's idempotency record, the steps' stored answers) and
  its evidence fingerprints (the consent forms') are gone;
- its Temporal payload key is destroyed, so its workflow history can no longer be read.

Request fingerprints of every referral also expire on their own (`forget_expired`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

from services.crypto.payload_keys import ReferralPayloadKeys
from services.models import Consent, IdempotencyRecord, Referral, StepAnswer

# Empty, not NULL: the columns stay as they are, and "" can never be a pseudonym.
UNLINKED = ""


@dataclass(frozen=True)
class Unlinked:
    """What `unlink` removed (counts only: nothing of the person)."""

    request_fingerprints: int
    evidence_fingerprints: int


def unlink(
    *, session: Session, referral_id: uuid.UUID, payload_keys: ReferralPayloadKeys | None
) -> Unlinked:
    """Remove everything of a purged referral that could link it back to the person (in the
    caller's transaction, with the shredding of its data key)."""
    referral = session.get(Referral, referral_id)
    if referral is not None:
        referral.subject_pseudonym = UNLINKED
        referral.name_pseudonym = UNLINKED
        referral.target_group = UNLINKED
        referral.personal = {}
        session.add(referral)
    created = session.exec(
        delete(IdempotencyRecord).where(col(IdempotencyRecord.referral_id) == referral_id)
    )
    steps = session.exec(delete(StepAnswer).where(col(StepAnswer.referral_id) == referral_id))
    evidence = session.exec(
        update(Consent)
        .where(col(Consent.referral_id) == referral_id, col(Consent.evidence_hash) != UNLINKED)
        .values(evidence_hash=UNLINKED)
    )
    if payload_keys is not None:
        payload_keys.destroy(session=session, referral_id=referral_id)
    session.flush()
    return Unlinked(
        request_fingerprints=created.rowcount + steps.rowcount,
        evidence_fingerprints=evidence.rowcount,
    )


def settle(engine: Engine) -> bool:
    """After a purge's commit: on SQLite, fold the write-ahead log into the database file
    and truncate it, so the rows as they were before the purge do not stay in the WAL file
    (PostgreSQL drops dead row versions itself, by autovacuum). Best effort: True if done."""
    if engine.dialect.name != "sqlite":
        return True
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
    except SQLAlchemyError:
        return False
    # (busy, log frames, checkpointed frames): busy when a reader held the log
    return row is not None and row[0] == 0


def forget_expired(*, session: Session, now: datetime, ttl: timedelta) -> int:
    """Delete the request fingerprints whose time is up (the caller commits)."""
    steps = session.exec(delete(StepAnswer).where(col(StepAnswer.expires_at) <= now))
    created = session.exec(
        delete(IdempotencyRecord).where(col(IdempotencyRecord.created_at) <= now - ttl)
    )
    return int(steps.rowcount + created.rowcount)
