"""Idempotent steps: the first answer to an Idempotency-Key is stored, a retry gets it again.

A key belongs to an organisation. The request it was first used with is known only by a keyed
fingerprint (HMAC with a key of the key ring), so the table never holds, nor hashes in clear,
anything of the body. A stored answer expires after the configured time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from services.errors import KeyInUse, Unprocessable
from services.models import StepAnswer, utcnow

# A claim left by a request that died before answering is taken over after this long. Short
# is safe: the taken-over step reaches the workflow under the same update id (Temporal runs
# it once), and its stored state and answer commit in one transaction.
STALE_CLAIM = timedelta(seconds=15)
IN_USE = "a request with this Idempotency-Key is being processed; try again shortly"


def fingerprint(key: bytes, *, purpose: str, body: Any) -> str:
    """The keyed fingerprint of a request body (HMAC-SHA256, never an unkeyed hash)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    message = purpose.encode() + b"\x00" + canonical.encode()
    return hmac.new(key, b"idempotency:" + message, hashlib.sha256).hexdigest()


def update_id(key: bytes, *, organisation: str, idempotency_key: str) -> str:
    """The Temporal update id of a keyed step: a retry is the same update to the workflow,
    which Temporal runs once. Keyed, so the key itself never reaches Temporal."""
    message = f"{organisation}\x00{idempotency_key}".encode()
    return "step-" + hmac.new(key, b"update-id:" + message, hashlib.sha256).hexdigest()[:40]


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a key: a fresh claim, or the stored answer to repeat."""

    replay_status: int | None
    # this request takes over the claim of one that died before answering
    takeover: bool = False
    # which of the request's fingerprints (one per live pseudonym key version, current
    # first) the stored one is: the key version the first request used
    matched: int = 0


def claim(
    *,
    session: Session,
    organisation: str,
    key: str,
    fingerprints: Sequence[str],
    referral_id: uuid.UUID,
    action: str,
    ttl_seconds: int,
) -> Claim:
    """Claim `key` for this request, or find the answer of the request that used it first.
    `fingerprints`: the request's under every live pseudonym key version, current first (a
    new claim stores the first; a stored one made before a rotation matches a later one)."""
    if not fingerprints:
        # a caller's mistake, never the client's: not a refusal (ValueError is one, a 422)
        raise TypeError("a claim needs the request's fingerprint")
    now = utcnow()
    row = session.get(StepAnswer, (organisation, key))
    if row is not None and row.expires_at <= now:
        session.delete(row)
        session.flush()
        row = None
    if row is not None:
        if row.fingerprint not in fingerprints or (row.referral_id, row.action) != (
            referral_id,
            action,
        ):
            raise Unprocessable("this Idempotency-Key was used with a different request")
        matched = list(fingerprints).index(row.fingerprint)
        if row.status_code is not None:
            return Claim(replay_status=row.status_code, matched=matched)
        if now - row.created_at < STALE_CLAIM:
            raise KeyInUse(IN_USE)
        # the first request died before answering: this one takes over (the workflow
        # update carries the same id, so Temporal still runs the step once)
        row.created_at = now
        session.add(row)
        session.commit()
        return Claim(replay_status=None, takeover=True, matched=matched)
    session.add(
        StepAnswer(
            organisation=organisation,
            key=key,
            fingerprint=fingerprints[0],
            referral_id=referral_id,
            action=action,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
    )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise KeyInUse(IN_USE) from None
    return Claim(replay_status=None)


def answered(*, session: Session, organisation: str, key: str, status_code: int) -> None:
    """Store the answer of a claimed key (in the caller's transaction)."""
    row = session.get(StepAnswer, (organisation, key))
    if row is not None:
        row.status_code = status_code
        session.add(row)


def release(*, session: Session, organisation: str, key: str) -> None:
    """Give a claimed key up after a refused or failed step, so a retry runs it again."""
    row = session.get(StepAnswer, (organisation, key))
    if row is not None and row.status_code is None:
        session.delete(row)
        session.commit()
