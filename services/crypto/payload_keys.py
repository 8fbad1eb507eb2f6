"""Temporal payload keys of referrals: each referral's workflow history is sealed with a key
of its own, which the purge destroys, so the history can no longer be read afterwards.

The key is created with the referral (in the transaction that stores it) and kept wrapped by
the key ring's current Temporal payload key. Its id, `rk-<referral id>`, is what a payload
names in its metadata, so a payload is opened by the key it names, without any context.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Column, DateTime, Engine, LargeBinary, event
from sqlmodel import Field, Session, SQLModel

from services.crypto.errors import DecryptionError
from services.crypto.keyring import KEY_BYTES, NONCE_BYTES, KeyRing

REFERRAL_KEY_PREFIX = "rk-"
_WRAP_AAD_PREFIX = b"referral-engine/referral-payload-key/v1\x00"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ReferralPayloadKey(SQLModel, table=True):
    """The wrapped Temporal payload key of one referral; `destroyed_at` once purged."""

    __tablename__ = "referral_payload_key"

    referral_id: uuid.UUID = Field(primary_key=True)
    wrapping_key_id: str = Field(max_length=64)
    wrapped_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(
        default_factory=_utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    destroyed_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


def referral_key_id(referral_id: uuid.UUID) -> str:
    """The key id a payload sealed with the referral's key names in its metadata."""
    return f"{REFERRAL_KEY_PREFIX}{referral_id}"


def referral_of_key_id(key_id: str) -> uuid.UUID | None:
    """The referral whose key `key_id` names, or None for a key of the key ring."""
    if not key_id.startswith(REFERRAL_KEY_PREFIX):
        return None
    try:
        return uuid.UUID(key_id[len(REFERRAL_KEY_PREFIX) :])
    except ValueError:
        raise DecryptionError("a payload names a malformed referral key id") from None


@dataclass(frozen=True, slots=True)
class PayloadKeyState:
    """A referral's payload key as the store holds it: the key, none, or destroyed."""

    key: bytes | None
    destroyed: bool = False


_NONE = PayloadKeyState(key=None)
_DESTROYED = PayloadKeyState(key=None, destroyed=True)


def _aad(referral_id: uuid.UUID, wrapping_key_id: str) -> bytes:
    return _WRAP_AAD_PREFIX + referral_id.bytes + wrapping_key_id.encode("utf-8")


class ReferralPayloadKeys:
    """Creates, opens and destroys the per-referral Temporal payload keys.

    Opened keys are cached for `cache_seconds`: another process's purge takes effect here
    within that time; this process's own purge at once.
    """

    def __init__(
        self,
        engine: Engine,
        keyring: KeyRing,
        *,
        cache_seconds: float = 60.0,
        cache_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._keyring = keyring
        self._ttl = cache_seconds
        self._max = cache_entries
        self._clock = clock
        self._cache: OrderedDict[uuid.UUID, tuple[float, PayloadKeyState]] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, *, session: Session, referral_id: uuid.UUID) -> None:
        """Create the referral's payload key (in the transaction that stores the referral)."""
        wrapping_key_id = self._keyring.current_payload_key_id()
        key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self._keyring.payload_key(wrapping_key_id)).encrypt(
            nonce, key, _aad(referral_id, wrapping_key_id)
        )
        session.add(
            ReferralPayloadKey(
                referral_id=referral_id, wrapping_key_id=wrapping_key_id, wrapped_key=nonce + sealed
            )
        )
        session.flush()

    def destroy(self, *, session: Session, referral_id: uuid.UUID) -> None:
        """Destroy the referral's payload key: its workflow history can never be read again."""
        now = _utcnow()
        row = session.get(ReferralPayloadKey, referral_id)
        if row is None:
            # A tombstone, so nothing creates a key for a purged referral later.
            session.add(
                ReferralPayloadKey(
                    referral_id=referral_id,
                    wrapping_key_id="",
                    wrapped_key=b"",
                    created_at=now,
                    destroyed_at=now,
                )
            )
        elif row.destroyed_at is None:
            row.wrapped_key = b""
            row.destroyed_at = now
            session.add(row)
        session.flush()
        self.forget(referral_id)
        # and again once committed: a read between the flush and the commit saw the old key
        event.listen(session, "after_commit", lambda _s: self.forget(referral_id), once=True)

    def cached(self, referral_id: uuid.UUID) -> PayloadKeyState | None:
        """The referral's payload key if this process holds it fresh (never blocks)."""
        with self._lock:
            cached = self._cache.get(referral_id)
            if cached is None or self._clock() >= cached[0]:
                return None
            self._cache.move_to_end(referral_id)
            return cached[1]

    def state(self, referral_id: uuid.UUID, *, engine: Engine | None = None) -> PayloadKeyState:
        """The referral's payload key (blocking: a database read on a cache miss, through
        `engine` if given, e.g. the audit writer's own pool)."""
        found = self.cached(referral_id)
        if found is not None:
            return found
        now = self._clock()
        with Session(engine or self._engine) as session:
            state = self.state_in(session=session, referral_id=referral_id)
        # "No key" is not kept: a key committed a moment later must be used from then on.
        if self._max > 0 and state is not _NONE:
            with self._lock:
                self._cache[referral_id] = (now + self._ttl, state)
                self._cache.move_to_end(referral_id)
                while len(self._cache) > self._max:
                    self._cache.popitem(last=False)
        return state

    def state_in(self, *, session: Session, referral_id: uuid.UUID) -> PayloadKeyState:
        """The referral's payload key as `session`'s transaction sees it (one that creates the
        referral, or purges it before the key goes); never cached."""
        row = session.get(ReferralPayloadKey, referral_id)
        return self._open(row) if row is not None else _NONE

    def _open(self, row: ReferralPayloadKey) -> PayloadKeyState:
        if row.destroyed_at is not None:
            return _DESTROYED
        data = row.wrapped_key
        wrapping = AESGCM(self._keyring.payload_key(row.wrapping_key_id))
        try:
            key = wrapping.decrypt(
                data[:NONCE_BYTES], data[NONCE_BYTES:], _aad(row.referral_id, row.wrapping_key_id)
            )
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("a referral payload key failed authentication") from exc
        return PayloadKeyState(key=key)

    def forget(self, referral_id: uuid.UUID) -> None:
        """Drop the referral's key from this process's cache."""
        with self._lock:
            self._cache.pop(referral_id, None)
