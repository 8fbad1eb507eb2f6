"""Envelope encryption of personal fields: one AES-256-GCM data key per referral.

Each data key is stored wrapped by a versioned key-encryption key of the key ring; every
sealed value is bound to its referral and field through the GCM associated data.
Shredding a referral destroys its data key, and with it every copy of its sealed values.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Column, DateTime, LargeBinary, bindparam, update
from sqlmodel import Field, Session, SQLModel, col, select

from services.crypto.errors import DataKeyShredded, DecryptionError
from services.crypto.keyring import NONCE_BYTES, KeyRing, WrappedKey
from services.db import PreparedRead, pinned_to, read_rows, record_columns

TOKEN_VERSION = "v1"
_AAD_PREFIX = b"referral-engine/field/v1\x00"
_PINNED_ROWS = "services.crypto.referral_data_keys"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ReferralDataKey(SQLModel, table=True):
    """The wrapped data key of one referral; `destroyed_at` is set once it is shredded."""

    __tablename__ = "referral_data_key"

    referral_id: uuid.UUID = Field(primary_key=True)
    kek_version: str = Field(max_length=64, index=True)
    wrapped_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(
        default_factory=_utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    destroyed_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


def _aad(referral_id: uuid.UUID, field: str) -> bytes:
    # The referral id has a fixed length (16 bytes), so prefix | id | field is unambiguous.
    return _AAD_PREFIX + referral_id.bytes + field.encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_field(field: str) -> None:
    if not field:
        raise ValueError("a sealed value needs a non-empty field name")


class _KeyRow(NamedTuple):
    """A referral's data-key row as opening a field reads it."""

    kek_version: str
    wrapped_key: bytes
    destroyed_at: datetime | None


# built once, read below the ORM (see `PersonalDataVault._cipher`)
_DATA_KEY = PreparedRead(
    record_columns(ReferralDataKey, _KeyRow).where(
        col(ReferralDataKey.referral_id) == bindparam("referral_id")
    )
)


class _DataKeyCache:
    """A bounded LRU of unwrapped data keys that forgets entries after `ttl` seconds.

    Each entry remembers the wrapped form it came from and only answers for that form, so
    a key created in a rolled-back transaction can never stand in for the stored one.
    """

    def __init__(self, *, max_entries: int, ttl: float, clock: Callable[[], float]) -> None:
        self._entries: OrderedDict[uuid.UUID, tuple[float, bytes, AESGCM]] = OrderedDict()
        self._max_entries = max_entries
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()

    def get(self, referral_id: uuid.UUID, wrapped_key: bytes) -> AESGCM | None:
        with self._lock:
            entry = self._entries.get(referral_id)
            if entry is None:
                return None
            expires_at, cached_wrap, cipher = entry
            if cached_wrap != wrapped_key:
                return None
            if self._clock() >= expires_at:
                del self._entries[referral_id]
                return None
            self._entries.move_to_end(referral_id)
            return cipher

    def put(self, referral_id: uuid.UUID, wrapped_key: bytes, cipher: AESGCM) -> None:
        if self._max_entries <= 0:
            return
        with self._lock:
            self._entries[referral_id] = (self._clock() + self._ttl, wrapped_key, cipher)
            self._entries.move_to_end(referral_id)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def evict(self, referral_id: uuid.UUID) -> None:
        with self._lock:
            self._entries.pop(referral_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class PersonalDataVault:
    """Seals and opens the personal fields of referrals with per-referral data keys."""

    def __init__(
        self,
        keyring: KeyRing,
        *,
        cache_entries: int = 4096,
        cache_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keyring = keyring
        self._cache = _DataKeyCache(max_entries=cache_entries, ttl=cache_seconds, clock=clock)

    # -- data keys ------------------------------------------------------------------

    def _cipher(self, *, session: Session, referral_id: uuid.UUID, create: bool) -> AESGCM:
        # The row is checked in every transaction, so a key shredded by another process is
        # refused from the next transaction on despite this process's key cache. It is
        # pinned in the session for the transaction it was read in: repeats within it cost
        # no query, and `shred` drops the pin. Read below the ORM (`read_rows`): an entity
        # cost more than the rest of opening a record's fields.
        pinned: dict[uuid.UUID, tuple[Callable[[], object], _KeyRow]] = session.info.setdefault(
            _PINNED_ROWS, {}
        )
        found = pinned.get(referral_id)
        transaction = session.get_transaction()
        if found is not None and transaction is not None and found[0]() is transaction:
            row: _KeyRow | None = found[1]
        else:
            read = read_rows(session, _DATA_KEY, {"referral_id": referral_id}).first()
            row = None if read is None else _KeyRow(*read)
        if row is None:
            if not create:
                raise DecryptionError("the referral has no data key")
            return self._create_key(session=session, referral_id=referral_id)
        pinned[referral_id] = (pinned_to(session.get_transaction()), row)
        if row.destroyed_at is not None:
            raise DataKeyShredded("the referral's data key was shredded")
        cipher = self._cache.get(referral_id, row.wrapped_key)
        if cipher is None:
            wrapped = WrappedKey(kek_version=row.kek_version, ciphertext=row.wrapped_key)
            cipher = AESGCM(self._keyring.unwrap(wrapped))
            self._cache.put(referral_id, row.wrapped_key, cipher)
        return cipher

    def _create_key(self, *, session: Session, referral_id: uuid.UUID) -> AESGCM:
        data_key = AESGCM.generate_key(bit_length=256)
        wrapped = self._keyring.wrap(data_key)
        row = ReferralDataKey(
            referral_id=referral_id, kek_version=wrapped.kek_version, wrapped_key=wrapped.ciphertext
        )
        session.add(row)
        # Flush now so two writers creating the same referral's key collide here, not later.
        session.flush()
        session.info.setdefault(_PINNED_ROWS, {})[referral_id] = (
            pinned_to(session.get_transaction()),
            _KeyRow(wrapped.kek_version, wrapped.ciphertext, None),
        )
        cipher = AESGCM(data_key)
        self._cache.put(referral_id, wrapped.ciphertext, cipher)
        return cipher

    def ensure_data_key(self, *, session: Session, referral_id: uuid.UUID) -> None:
        """Create the referral's data key now (e.g. in the transaction creating the referral)."""
        self._cipher(session=session, referral_id=referral_id, create=True)

    # -- sealing --------------------------------------------------------------------

    @staticmethod
    def _seal_with(cipher: AESGCM, referral_id: uuid.UUID, field: str, value: str) -> str:
        _check_field(field)
        nonce = os.urandom(NONCE_BYTES)
        sealed = cipher.encrypt(nonce, value.encode("utf-8"), _aad(referral_id, field))
        return f"{TOKEN_VERSION}.{_b64(nonce)}.{_b64(sealed)}"

    @staticmethod
    def _parse(token: str) -> tuple[bytes, bytes]:
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_VERSION:
            raise DecryptionError("not a sealed value of a known format")
        try:
            nonce, sealed = _unb64(parts[1]), _unb64(parts[2])
        except (binascii.Error, ValueError) as exc:
            raise DecryptionError("a sealed value is not valid base64") from exc
        if len(nonce) != NONCE_BYTES:
            raise DecryptionError("a sealed value has a malformed nonce")
        return nonce, sealed

    @staticmethod
    def _open_with(cipher: AESGCM, referral_id: uuid.UUID, field: str, token: str) -> str:
        _check_field(field)
        nonce, sealed = PersonalDataVault._parse(token)
        try:
            plain = cipher.decrypt(nonce, sealed, _aad(referral_id, field))
        except InvalidTag as exc:
            raise DecryptionError(
                "a sealed value failed authentication: tampered, or sealed for another "
                "referral or field"
            ) from exc
        return plain.decode("utf-8")

    def seal(self, *, session: Session, referral_id: uuid.UUID, field: str, value: str) -> str:
        """Encrypt `value` of `field` for the referral; creates its data key on first use."""
        cipher = self._cipher(session=session, referral_id=referral_id, create=True)
        return self._seal_with(cipher, referral_id, field, value)

    def open(self, *, session: Session, referral_id: uuid.UUID, field: str, token: str) -> str:
        """Decrypt a sealed value; raises `DecryptionError` or `DataKeyShredded`."""
        cipher = self._cipher(session=session, referral_id=referral_id, create=False)
        return self._open_with(cipher, referral_id, field, token)

    def seal_record(
        self, *, session: Session, referral_id: uuid.UUID, fields: Mapping[str, str]
    ) -> dict[str, str]:
        """Seal every field of a record with the referral's data key."""
        cipher = self._cipher(session=session, referral_id=referral_id, create=True)
        return {name: self._seal_with(cipher, referral_id, name, v) for name, v in fields.items()}

    def open_record(
        self, *, session: Session, referral_id: uuid.UUID, fields: Mapping[str, str]
    ) -> dict[str, str]:
        """Open every sealed field of a record; raises like `open`."""
        if not fields:
            return {}
        cipher = self._cipher(session=session, referral_id=referral_id, create=False)
        return {name: self._open_with(cipher, referral_id, name, t) for name, t in fields.items()}

    # -- shredding and rotation -----------------------------------------------------

    def shred(self, *, session: Session, referral_id: uuid.UUID) -> None:
        """Destroy the referral's data key; its sealed values can never be opened again."""
        now = _utcnow()
        row = session.get(ReferralDataKey, referral_id)
        if row is None:
            # A tombstone, so a later seal cannot quietly create a fresh key for a purged
            # referral.
            session.add(
                ReferralDataKey(
                    referral_id=referral_id,
                    kek_version="",
                    wrapped_key=b"",
                    created_at=now,
                    destroyed_at=now,
                )
            )
        elif row.destroyed_at is None:
            # Old wrapped copies may survive in backups or free database pages; they stay
            # unreadable once their KEK version is rotated away and retired.
            row.wrapped_key = b""
            row.destroyed_at = now
            session.add(row)
        session.flush()
        session.info.get(_PINNED_ROWS, {}).pop(referral_id, None)
        self._cache.evict(referral_id)

    def is_shredded(self, *, session: Session, referral_id: uuid.UUID) -> bool:
        """Whether the referral's data key has been shredded."""
        row = session.get(ReferralDataKey, referral_id)
        return row is not None and row.destroyed_at is not None

    def rewrap_all(self, *, session: Session, batch_size: int = 500) -> int:
        """Rewrap every live data key under the current KEK version; commits each batch."""
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        target = self._keyring.current_kek_version()
        rewrapped = 0
        after: uuid.UUID | None = None
        while True:
            query = select(
                ReferralDataKey.referral_id,
                ReferralDataKey.kek_version,
                ReferralDataKey.wrapped_key,
            ).where(
                col(ReferralDataKey.destroyed_at).is_(None),
                col(ReferralDataKey.kek_version) != target,
            )
            if after is not None:
                query = query.where(col(ReferralDataKey.referral_id) > after)
            batch = session.exec(
                query.order_by(col(ReferralDataKey.referral_id)).limit(batch_size)
            ).all()
            if not batch:
                return rewrapped
            for referral_id, kek_version, wrapped_key in batch:
                data_key = self._keyring.unwrap(WrappedKey(kek_version, wrapped_key))
                fresh = self._keyring.wrap(data_key)
                # Conditional on the row being unchanged: a concurrent shred (or another
                # rewrap) wins, and a destroyed key is never written back.
                result = session.exec(
                    update(ReferralDataKey)
                    .where(
                        col(ReferralDataKey.referral_id) == referral_id,
                        col(ReferralDataKey.kek_version) == kek_version,
                        col(ReferralDataKey.destroyed_at).is_(None),
                    )
                    .values(kek_version=fresh.kek_version, wrapped_key=fresh.ciphertext)
                )
                rewrapped += result.rowcount
            # Short transactions per batch keep writers unblocked while the system runs.
            session.commit()
            after = batch[-1][0]

    def forget_cached_keys(self) -> None:
        """Drop every unwrapped data key held in memory."""
        self._cache.clear()
