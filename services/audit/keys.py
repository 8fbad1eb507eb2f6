"""The audit signing key, apart from the data-key ring: its own file and its own rotation.

Whoever holds the data keys should not also be able to re-sign the audit history, so the
key that signs tree heads lives on its own (a file in development, a KMS or HSM key in a
deployment). A rotation keeps every earlier public key and has the outgoing key endorse
the incoming one: an auditor who trusts any one key of the chain can follow it forward,
and heads signed by earlier keys keep verifying.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from services.audit.models import canonical_json

KEY_FILE_FORMAT = 1
ENDORSEMENT_FORMAT = "referral-audit-key-endorsement/v1"


class AuditKeyError(RuntimeError):
    """The audit key file is missing, malformed or not protected."""


def key_id_of(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The id of an audit key: a fingerprint of its public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _raw_public(key: Ed25519PublicKey) -> str:
    return _b64(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def endorsement_bytes(*, key_id: str, public_key: str, created_at: str) -> bytes:
    """What the outgoing key signs when it hands over to `key_id` (domain-tagged)."""
    return canonical_json(
        {
            "format": ENDORSEMENT_FORMAT,
            "key_id": key_id,
            "public_key": public_key,
            "created_at": created_at,
        }
    )


@dataclass(frozen=True)
class AuditPublicKey:
    """One key of the chain: its public half, and the previous key's endorsement of it."""

    key_id: str
    public_key: str  # base64 of the raw 32 bytes
    created_at: str
    endorsed_by: str | None = None
    endorsement: str | None = None  # base64 signature by `endorsed_by` over endorsement_bytes

    def key(self) -> Ed25519PublicKey:
        """The verifying key."""
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(self.public_key, validate=True))

    def record(self) -> dict[str, Any]:
        """The JSON form (a line of an export, an entry of the key file)."""
        return {
            "key_id": self.key_id,
            "public_key": self.public_key,
            "created_at": self.created_at,
            "endorsed_by": self.endorsed_by,
            "endorsement": self.endorsement,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AuditPublicKey:
        """Read the JSON form; raises ValueError when it is malformed."""
        try:
            key = cls(
                key_id=str(record["key_id"]),
                public_key=str(record["public_key"]),
                created_at=str(record["created_at"]),
                endorsed_by=None
                if record.get("endorsed_by") is None
                else str(record["endorsed_by"]),
                endorsement=None
                if record.get("endorsement") is None
                else str(record["endorsement"]),
            )
            key.key()
        except (KeyError, TypeError, ValueError, binascii.Error) as error:
            raise ValueError("malformed audit key record") from error
        return key


def _endorse(previous: Ed25519PrivateKey | None, new: Ed25519PublicKey) -> AuditPublicKey:
    key_id, public, created_at = key_id_of(new), _raw_public(new), _now()
    if previous is None:
        return AuditPublicKey(key_id, public, created_at)
    message = endorsement_bytes(key_id=key_id, public_key=public, created_at=created_at)
    return AuditPublicKey(
        key_id, public, created_at, key_id_of(previous), _b64(previous.sign(message))
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def trusted_keys(
    listed: Iterable[AuditPublicKey], anchors: Iterable[Ed25519PublicKey]
) -> dict[str, Ed25519PublicKey]:
    """The keys an auditor may accept: the anchors, and listed keys endorsed from them.

    A listed key counts only if its id is its fingerprint and a key already trusted
    endorsed it; a forger who lists a key of their own gains nothing.
    """
    trusted = {key_id_of(anchor): anchor for anchor in anchors}
    pending = list(listed)
    progress = True
    while progress:
        progress = False
        for candidate in list(pending):
            try:
                public = candidate.key()
            except (ValueError, binascii.Error):
                pending.remove(candidate)
                continue
            if key_id_of(public) != candidate.key_id:
                pending.remove(candidate)
                continue
            if candidate.key_id in trusted:
                pending.remove(candidate)
                continue
            endorser = trusted.get(candidate.endorsed_by or "")
            if endorser is None or candidate.endorsement is None:
                continue
            try:
                endorser.verify(
                    base64.b64decode(candidate.endorsement, validate=True),
                    endorsement_bytes(
                        key_id=candidate.key_id,
                        public_key=candidate.public_key,
                        created_at=candidate.created_at,
                    ),
                )
            except (InvalidSignature, ValueError, binascii.Error):
                pending.remove(candidate)
                continue
            trusted[candidate.key_id] = public
            pending.remove(candidate)
            progress = True
    return trusted


def load_public_keys(pem_text: str) -> list[Ed25519PublicKey]:
    """Every Ed25519 public key in a PEM text (one or several blocks)."""
    keys: list[Ed25519PublicKey] = []
    marker = "-----END PUBLIC KEY-----"
    for block in pem_text.split(marker):
        if "-----BEGIN PUBLIC KEY-----" not in block:
            continue
        loaded = serialization.load_pem_public_key((block.strip() + "\n" + marker).encode())
        if not isinstance(loaded, Ed25519PublicKey):
            raise ValueError("audit and witness keys must be Ed25519 keys")
        keys.append(loaded)
    if not keys:
        raise ValueError("no public key found")
    return keys


def public_keys_pem(keys: Iterable[Ed25519PublicKey]) -> str:
    """Several public keys as concatenated SubjectPublicKeyInfo PEM blocks."""
    return "".join(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")
        for key in keys
    )


class AuditKeyFile:
    """The development audit key file (mode 0600, marked development only).

    It holds the private half of the current key only; earlier keys stay as public keys
    with their endorsements, so rotating destroys the outgoing private key.
    """

    def __init__(self, path: Path, document: dict[str, Any]) -> None:
        self._path = path
        self._doc = document
        try:
            if document.get("development_only") is not True:
                raise AuditKeyError("a file audit key must be marked development_only")
            if document.get("format") != KEY_FILE_FORMAT:
                raise AuditKeyError("unsupported audit key file format")
            self._signing = Ed25519PrivateKey.from_private_bytes(
                base64.b64decode(document["private_key"], validate=True)
            )
            self._chain = [AuditPublicKey.from_record(r) for r in document["keys"]]
        except (KeyError, TypeError, ValueError, binascii.Error) as error:
            raise AuditKeyError(f"audit key file {path} is malformed") from error
        if not self._chain or self._chain[-1].key_id != key_id_of(self._signing):
            raise AuditKeyError(f"audit key file {path}: the current key is not the newest")
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int]:
        try:
            info = self._path.stat()
        except FileNotFoundError:
            return (0, 0)
        return (info.st_mtime_ns, info.st_ino)

    def current(self) -> tuple[str, Ed25519PrivateKey, dict[str, Ed25519PublicKey]]:
        """The current key id and key and every public key, re-read if another process
        (`referral audit rotate-key`) rotated the key since (an AuditLog key source)."""
        stamp = self._file_stamp()
        if stamp not in (self._stamp, (0, 0)):
            fresh = AuditKeyFile.load(self._path)
            self._doc, self._signing, self._chain = fresh._doc, fresh._signing, fresh._chain
            self._stamp = stamp
        return self.key_id, self._signing, self.verify_keys()

    @classmethod
    def create(cls, path: Path | str, *, previous: Ed25519PrivateKey | None = None) -> AuditKeyFile:
        """A new key file; `previous` (e.g. the key the data-key ring held) endorses it."""
        path = Path(path)
        signing = Ed25519PrivateKey.generate()
        chain: list[AuditPublicKey] = []
        if previous is not None:
            chain.append(_endorse(None, previous.public_key()))
        chain.append(_endorse(previous, signing.public_key()))
        document = cls._document(signing, chain)
        ring = cls(path, document)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as error:
            raise AuditKeyError(f"audit key file {path} already exists") from error
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        return ring

    @classmethod
    def load(cls, path: Path | str) -> AuditKeyFile:
        """Load the key file; refuses one readable by group or others."""
        path = Path(path)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError as error:
            raise AuditKeyError(f"audit key file {path} does not exist") from error
        if stat.S_IMODE(mode) & 0o077:
            raise AuditKeyError(f"audit key file {path} must be 0600")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise AuditKeyError(f"audit key file {path} is not readable JSON") from error
        if not isinstance(document, dict):
            raise AuditKeyError(f"audit key file {path} is malformed")
        return cls(path, document)

    @classmethod
    def load_or_create(
        cls, path: Path | str, *, previous: Ed25519PrivateKey | None = None
    ) -> AuditKeyFile:
        """Load the key file at `path`, creating it (endorsed by `previous`) if absent."""
        path = Path(path)
        if not path.exists():
            try:
                return cls.create(path, previous=previous)
            except AuditKeyError:
                pass  # another process created it meanwhile
        return cls.load(path)

    @staticmethod
    def _document(signing: Ed25519PrivateKey, chain: list[AuditPublicKey]) -> dict[str, Any]:
        return {
            "development_only": True,
            "format": KEY_FILE_FORMAT,
            "warning": "Development audit signing key. In production use a KMS or HSM key.",
            "private_key": _b64(signing.private_bytes_raw()),
            "keys": [key.record() for key in chain],
        }

    @property
    def key_id(self) -> str:
        """The id of the key that signs new tree heads."""
        return self._chain[-1].key_id

    def signing_key(self) -> Ed25519PrivateKey:
        """The current signing key."""
        return self._signing

    def chain(self) -> list[AuditPublicKey]:
        """Every key so far, oldest first, each endorsed by the one before."""
        return list(self._chain)

    def verify_keys(self) -> dict[str, Ed25519PublicKey]:
        """Every public key by id (earlier heads stay verifiable)."""
        return {key.key_id: key.key() for key in self._chain}

    def rotate(self) -> str:
        """A new current key, endorsed by the outgoing one, whose private half is destroyed."""
        signing = Ed25519PrivateKey.generate()
        chain = [*self._chain, _endorse(self._signing, signing.public_key())]
        document = self._document(signing, chain)
        handle, temporary = tempfile.mkstemp(dir=self._path.parent, prefix=".audit-key-")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(document, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, self._path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self._doc, self._signing, self._chain = document, signing, chain
        self._stamp = self._file_stamp()
        return self.key_id
