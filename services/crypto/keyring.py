"""The key ring: one key per job, each rotated on its own.

| job                       | calls                                                       |
|---------------------------|-------------------------------------------------------------|
| wrapping data keys (KEK)  | `current_kek_version`, `wrap`, `unwrap`, `rotate`, `retire`  |
| Temporal payloads         | `current_payload_key_id`, `payload_key`, `rotate_payload_key` |
| pseudonyms, fingerprints  | `pseudonym_key`, `pseudonym_keys`, `rotate_pseudonym_key`,   |
|                           | `retire_pseudonym_key`                                       |
| audit-entry pseudonyms    | `audit_pseudonym_key` (never rotated: entries are immutable) |
| web sessions              | `web_session_keys`, `rotate_web_session_key`                 |
| audit signatures          | `services.audit.keys` (a key of its own, not in this ring)   |

No key serves two jobs: rotating one never touches another. The payload keys also wrap
the per-referral payload keys (services.crypto.payload_keys), which the purge destroys.

The pseudonym key is versioned like the KEK: `pseudonym_key()` is the current version, which
new pseudonyms and fingerprints use; `pseudonym_keys()` lists every live version, current
first, so a fingerprint made before a rotation still matches (`referral keys
rotate-pseudonym-key` re-derives the stored pseudonyms, services/pseudonym_rotation.py). The
audit log's referral pseudonyms use a key of their own that never rotates: its entries are
immutable and must keep linking. A ring written before pseudonym keys had
versions (one `pseudonym_key`) loads with that key as version 1 and as the audit pseudonym
key, so pseudonyms and audit entries made before stay linked.

`KeyRing` is the interface a KMS or Vault Transit backend implements in production;
`FileKeyRing` keeps everything in one JSON file and exists for development only: the file
says so (`development_only`) and the settings refuse it in production.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.crypto.errors import DecryptionError, KeyRingError, UnknownKeyVersion

KEY_BYTES = 32
NONCE_BYTES = 12
FILE_FORMAT = 1
REFRESH_SECONDS = 1.0
# Associated data of a wrap names the KEK version, so a wrapped key cannot be presented
# as if it had been wrapped by another version.
_WRAP_AAD_PREFIX = b"referral-engine/kek-wrap/v1\x00"


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key encrypted under one version of the key-encryption key."""

    kek_version: str
    ciphertext: bytes


class KeyRing(Protocol):
    """The keys the engine needs; a KMS or Vault Transit backend implements the same calls."""

    def current_kek_version(self) -> str:
        """The KEK version new wraps use."""
        ...

    def wrap(self, data_key: bytes) -> WrappedKey:
        """Encrypt `data_key` under the current KEK version."""
        ...

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        """Decrypt a wrapped data key; raises `UnknownKeyVersion` or `DecryptionError`."""
        ...

    def rotate(self) -> str:
        """Add a new KEK version, make it current and return its id; old ones stay readable."""
        ...

    def retire(self, version: str) -> None:
        """Destroy a non-current KEK version; keys wrapped by it become unreadable."""
        ...

    def current_payload_key_id(self) -> str:
        """The id of the key the payload codec encrypts with."""
        ...

    def payload_key(self, key_id: str) -> bytes:
        """The payload-codec key `key_id`; raises `UnknownKeyVersion`."""
        ...

    def rotate_payload_key(self) -> str:
        """Add a new payload-codec key, make it current and return its id."""
        ...

    def pseudonym_key(self) -> bytes:
        """The current HMAC key of the pseudonyms and of the keyed request fingerprints."""
        ...

    def current_pseudonym_key_id(self) -> str:
        """The id of the current pseudonym key version (stored with each pseudonym)."""
        ...

    def pseudonym_keys(self) -> tuple[tuple[str, bytes], ...]:
        """Every live pseudonym key version as (id, key), current first: a fingerprint made
        before a rotation is checked against each."""
        ...

    def pseudonym_key_created_at(self, key_id: str) -> datetime:
        """When the pseudonym key version `key_id` was made; raises `UnknownKeyVersion`."""
        ...

    def rotate_pseudonym_key(self) -> str:
        """Add a pseudonym key version, make it current and return its id."""
        ...

    def retire_pseudonym_key(self, key_id: str) -> None:
        """Destroy a non-current pseudonym key version (services.pseudonym_rotation.retire
        first checks that nothing still uses it)."""
        ...

    def audit_pseudonym_key(self) -> bytes:
        """The HMAC key of the audit entries' referral pseudonyms; never rotated."""
        ...

    def web_session_keys(self) -> tuple[bytes, ...]:
        """The keys sealing web sessions, current first (the previous one still opens)."""
        ...

    def rotate_web_session_key(self) -> str:
        """Make a new web-session key current; only the one before it stays readable."""
        ...

    def audit_signing_key(self) -> Ed25519PrivateKey:
        """The audit key of logs signed before the audit key had its own file (legacy).

        New tree heads are signed by `services.audit.keys`; this key only endorses it."""
        ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _new_id(prefix: str, number: int) -> str:
    # The random suffix keeps ids distinct across key rings, so ciphertext from a ring that
    # was thrown away reports "unknown key" rather than looking like tampering.
    return f"{prefix}-{number}-{secrets.token_hex(3)}"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _new_pseudonym_keys(key: bytes | None = None) -> dict[str, Any]:
    if key is None:
        key_id = _new_id("ps", 1)
        created = _now()
    else:
        # A legacy ring's single key: every process loading the same file names it alike.
        key_id = "ps-1-" + hashlib.sha256(b"pseudonym-key-id:" + key).hexdigest()[:6]
        created = "1970-01-01T00:00:00+00:00"
    key = key if key is not None else os.urandom(KEY_BYTES)
    return {
        "current": key_id,
        "keys": {key_id: {"key": _b64(key), "created_at": created}},
        "retired": [],
    }


def _migrate(document: dict[str, Any]) -> dict[str, Any]:
    """A ring written before pseudonym keys had versions, in the current layout: its single
    key becomes version 1 and the audit pseudonym key (audit entries keep linking)."""
    if "pseudonym" in document or not isinstance(document.get("pseudonym_key"), str):
        return document
    migrated = dict(document)
    legacy = migrated.pop("pseudonym_key")
    try:
        key = _unb64(legacy)
    except ValueError as exc:
        raise KeyRingError("the key ring is malformed") from exc
    migrated["pseudonym"] = _new_pseudonym_keys(key)
    migrated.setdefault("audit_pseudonym_key", legacy)
    return migrated


def _new_web_session_keys() -> dict[str, Any]:
    key_id = _new_id("ws", 1)
    return {
        "current": key_id,
        "keys": {key_id: {"key": _b64(os.urandom(KEY_BYTES)), "created_at": _now()}},
    }


class FileKeyRing:
    """A development key ring kept in one JSON file (mode 0600, marked development only)."""

    def __init__(self, path: Path, document: dict[str, Any]) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._doc = _migrate(document)
        self._validate()
        self._keks: dict[str, AESGCM] = {}
        self._stamp = self._file_stamp()
        self._checked_at = time.monotonic()

    # -- construction ---------------------------------------------------------------

    @classmethod
    def create(cls, path: Path | str) -> FileKeyRing:
        """Create a new key ring file with fresh random keys; refuses to overwrite one."""
        path = Path(path)
        signing_key = Ed25519PrivateKey.generate().private_bytes_raw()
        kek_id = _new_id("kek", 1)
        payload_id = _new_id("pk", 1)
        document: dict[str, Any] = {
            "development_only": True,
            "format": FILE_FORMAT,
            "warning": "Development key ring. Never use it in production.",
            "created_at": _now(),
            "kek": {
                "current": kek_id,
                "versions": {kek_id: {"key": _b64(os.urandom(KEY_BYTES)), "created_at": _now()}},
                "retired": [],
            },
            "payload": {
                "current": payload_id,
                "keys": {payload_id: {"key": _b64(os.urandom(KEY_BYTES)), "created_at": _now()}},
            },
            "pseudonym": _new_pseudonym_keys(),
            "audit_pseudonym_key": _b64(os.urandom(KEY_BYTES)),
            "web_session": _new_web_session_keys(),
            "audit_signing_key": _b64(signing_key),
        }
        ring = cls(path, document)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise KeyRingError(f"key ring {path} already exists") from exc
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        ring._stamp = ring._file_stamp()
        return ring

    @classmethod
    def load(cls, path: Path | str) -> FileKeyRing:
        """Load an existing key ring file; refuses one readable by group or others."""
        path = Path(path)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError as exc:
            raise KeyRingError(f"key ring {path} does not exist") from exc
        if stat.S_IMODE(mode) & 0o077:
            raise KeyRingError(f"key ring {path} must not be readable by group or others (0600)")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise KeyRingError(f"key ring {path} is not readable JSON") from exc
        if not isinstance(document, dict):
            raise KeyRingError(f"key ring {path} is malformed")
        return cls(path, document)

    @classmethod
    def load_or_create(cls, path: Path | str) -> FileKeyRing:
        """Load the key ring at `path`, creating it first if it does not exist."""
        path = Path(path)
        if not path.exists():
            try:
                return cls.create(path)
            except KeyRingError:
                # Another process created it between the check and the create.
                pass
        return cls.load(path)

    @property
    def path(self) -> Path:
        """Where the key ring lives."""
        return self._path

    def _validate(self) -> None:
        doc = self._doc
        if doc.get("development_only") is not True:
            raise KeyRingError("a file key ring must be marked development_only")
        if doc.get("format") != FILE_FORMAT:
            raise KeyRingError("unsupported key ring format")
        try:
            kek = doc["kek"]
            if kek["current"] not in kek["versions"]:
                raise KeyRingError("the current KEK version has no key")
            payload = doc["payload"]
            if payload["current"] not in payload["keys"]:
                raise KeyRingError("the current payload key has no key")
            for entry in [*kek["versions"].values(), *payload["keys"].values()]:
                if len(_unb64(entry["key"])) != KEY_BYTES:
                    raise KeyRingError("a key of the key ring has the wrong length")
            pseudonym = doc["pseudonym"]
            if pseudonym["current"] not in pseudonym["keys"]:
                raise KeyRingError("the current pseudonym key has no key")
            for entry in pseudonym["keys"].values():
                if len(_unb64(entry["key"])) != KEY_BYTES:
                    raise KeyRingError("a pseudonym key has the wrong length")
                datetime.fromisoformat(entry["created_at"])
            if len(_unb64(doc["audit_pseudonym_key"])) != KEY_BYTES:
                raise KeyRingError("the audit pseudonym key has the wrong length")
            sessions = doc.get("web_session")
            if sessions is not None:
                if sessions["current"] not in sessions["keys"]:
                    raise KeyRingError("the current web-session key has no key")
                for entry in sessions["keys"].values():
                    if len(_unb64(entry["key"])) != KEY_BYTES:
                        raise KeyRingError("a web-session key has the wrong length")
            Ed25519PrivateKey.from_private_bytes(_unb64(doc["audit_signing_key"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyRingError("the key ring is malformed") from exc

    def _file_stamp(self) -> tuple[int, int]:
        try:
            info = self._path.stat()
        except FileNotFoundError:
            return (0, 0)
        return (info.st_mtime_ns, info.st_ino)

    def _refresh(self, *, force: bool = False) -> None:
        # Another process (`referral keys rotate`) may have changed the file while this one
        # runs; look at most once a second so rotation needs no restart.
        now = time.monotonic()
        if not force and now - self._checked_at < REFRESH_SECONDS:
            return
        self._checked_at = now
        stamp = self._file_stamp()
        if stamp == self._stamp or stamp == (0, 0):
            return
        with self._lock:
            fresh = FileKeyRing.load(self._path)
            self._doc = fresh._doc
            self._stamp = stamp
            self._keks = {v: c for v, c in self._keks.items() if v in self._doc["kek"]["versions"]}

    def _persist(self, document: dict[str, Any]) -> None:
        # Write a sibling temporary file and rename it over the old one, so a crash leaves
        # either the old or the new ring, never a torn one.
        directory = self._path.parent
        fd, temp_name = tempfile.mkstemp(prefix=".keyring-", suffix=".tmp", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, self._path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._doc = document
        self._stamp = self._file_stamp()

    # -- key-encryption keys --------------------------------------------------------

    def current_kek_version(self) -> str:
        """The KEK version new wraps use."""
        self._refresh()
        return str(self._doc["kek"]["current"])

    def kek_versions(self) -> list[str]:
        """Every readable KEK version, oldest first."""
        return list(self._doc["kek"]["versions"])

    def _kek(self, version: str) -> AESGCM:
        cipher = self._keks.get(version)
        if cipher is None:
            entry = self._doc["kek"]["versions"].get(version)
            if entry is None:
                self._refresh(force=True)
                entry = self._doc["kek"]["versions"].get(version)
            if entry is None:
                raise UnknownKeyVersion(f"unknown or retired KEK version {version!r}")
            cipher = AESGCM(_unb64(entry["key"]))
            self._keks[version] = cipher
        return cipher

    def wrap(self, data_key: bytes) -> WrappedKey:
        """Encrypt `data_key` under the current KEK version (AES-256-GCM)."""
        version = self.current_kek_version()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._kek(version).encrypt(nonce, data_key, _WRAP_AAD_PREFIX + version.encode())
        return WrappedKey(kek_version=version, ciphertext=nonce + sealed)

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        """Decrypt a wrapped data key; raises `UnknownKeyVersion` or `DecryptionError`."""
        cipher = self._kek(wrapped.kek_version)
        nonce, sealed = wrapped.ciphertext[:NONCE_BYTES], wrapped.ciphertext[NONCE_BYTES:]
        try:
            return cipher.decrypt(nonce, sealed, _WRAP_AAD_PREFIX + wrapped.kek_version.encode())
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("a wrapped data key failed authentication") from exc

    def rotate(self) -> str:
        """Add a new KEK version, make it current and return its id; old ones stay readable."""
        self._refresh(force=True)
        with self._lock:
            document = json.loads(json.dumps(self._doc))
            kek = document["kek"]
            version = _new_id("kek", len(kek["versions"]) + len(kek["retired"]) + 1)
            kek["versions"][version] = {"key": _b64(os.urandom(KEY_BYTES)), "created_at": _now()}
            kek["current"] = version
            self._persist(document)
            return version

    def retire(self, version: str) -> None:
        """Destroy a non-current KEK version; run `rewrap` first or its keys become unreadable."""
        self._refresh(force=True)
        with self._lock:
            if version == self._doc["kek"]["current"]:
                raise KeyRingError("the current KEK version cannot be retired")
            if version not in self._doc["kek"]["versions"]:
                raise UnknownKeyVersion(f"unknown or retired KEK version {version!r}")
            document = json.loads(json.dumps(self._doc))
            del document["kek"]["versions"][version]
            document["kek"]["retired"].append({"version": version, "retired_at": _now()})
            self._persist(document)
            self._keks.pop(version, None)

    # -- payload codec, pseudonyms ---------------------------------------------------

    def current_payload_key_id(self) -> str:
        """The id of the key the payload codec encrypts with."""
        self._refresh()
        return str(self._doc["payload"]["current"])

    def payload_key(self, key_id: str) -> bytes:
        """The payload-codec key `key_id`; raises `UnknownKeyVersion`."""
        entry = self._doc["payload"]["keys"].get(key_id)
        if entry is None:
            self._refresh(force=True)
            entry = self._doc["payload"]["keys"].get(key_id)
        if entry is None:
            raise UnknownKeyVersion(f"unknown payload key id {key_id!r}")
        return _unb64(entry["key"])

    def rotate_payload_key(self) -> str:
        """Add a new payload-codec key, make it current and return its id."""
        self._refresh(force=True)
        with self._lock:
            document = json.loads(json.dumps(self._doc))
            payload = document["payload"]
            key_id = _new_id("pk", len(payload["keys"]) + 1)
            payload["keys"][key_id] = {"key": _b64(os.urandom(KEY_BYTES)), "created_at": _now()}
            payload["current"] = key_id
            self._persist(document)
            return key_id

    # -- pseudonyms ------------------------------------------------------------------

    def pseudonym_key(self) -> bytes:
        """The current HMAC key of the pseudonyms and keyed fingerprints."""
        return self.pseudonym_keys()[0][1]

    def current_pseudonym_key_id(self) -> str:
        """The id of the current pseudonym key version."""
        self._refresh()
        return str(self._doc["pseudonym"]["current"])

    def pseudonym_keys(self) -> tuple[tuple[str, bytes], ...]:
        """Every live pseudonym key version as (id, key), current first, then newest first."""
        self._refresh()
        pseudonym = self._doc["pseudonym"]
        current = pseudonym["current"]
        others = [k for k in reversed(list(pseudonym["keys"])) if k != current]
        return tuple((k, _unb64(pseudonym["keys"][k]["key"])) for k in [current, *others])

    def pseudonym_key_created_at(self, key_id: str) -> datetime:
        """When the pseudonym key version `key_id` was made; raises `UnknownKeyVersion`."""
        self._refresh()
        entry = self._doc["pseudonym"]["keys"].get(key_id)
        if entry is None:
            raise UnknownKeyVersion(f"unknown or retired pseudonym key {key_id!r}")
        return datetime.fromisoformat(entry["created_at"])

    def rotate_pseudonym_key(self) -> str:
        """Add a pseudonym key version, make it current and return its id; the earlier ones
        stay until retired."""
        self._refresh(force=True)
        with self._lock:
            document = json.loads(json.dumps(self._doc))
            pseudonym = document["pseudonym"]
            key_id = _new_id("ps", len(pseudonym["keys"]) + len(pseudonym["retired"]) + 1)
            pseudonym["keys"][key_id] = {"key": _b64(os.urandom(KEY_BYTES)), "created_at": _now()}
            pseudonym["current"] = key_id
            self._persist(document)
            return key_id

    def retire_pseudonym_key(self, key_id: str) -> None:
        """Destroy a non-current pseudonym key version: what it made can no longer match."""
        self._refresh(force=True)
        with self._lock:
            pseudonym = self._doc["pseudonym"]
            if key_id == pseudonym["current"]:
                raise KeyRingError("the current pseudonym key cannot be retired")
            if key_id not in pseudonym["keys"]:
                raise UnknownKeyVersion(f"unknown or retired pseudonym key {key_id!r}")
            document = json.loads(json.dumps(self._doc))
            del document["pseudonym"]["keys"][key_id]
            document["pseudonym"]["retired"].append({"version": key_id, "retired_at": _now()})
            self._persist(document)

    def audit_pseudonym_key(self) -> bytes:
        """The HMAC key of the audit entries' referral pseudonyms; never rotated."""
        return _unb64(self._doc["audit_pseudonym_key"])

    # -- web sessions -----------------------------------------------------------------

    def web_session_keys(self) -> tuple[bytes, ...]:
        """The keys sealing web sessions, current first (the previous one still opens)."""
        self._refresh()
        if "web_session" not in self._doc:
            # A ring made before web sessions had a key of their own (they used the
            # pseudonym key): give it one now; sessions sealed before need a new login.
            self._add_web_session_keys()
        sessions = self._doc["web_session"]
        current = sessions["current"]
        others = [k for k in sessions["keys"] if k != current]
        return tuple(_unb64(sessions["keys"][k]["key"]) for k in [current, *others])

    def _add_web_session_keys(self) -> None:
        self._refresh(force=True)
        with self._lock:
            if "web_session" in self._doc:
                return
            document = json.loads(json.dumps(self._doc))
            document["web_session"] = _new_web_session_keys()
            self._persist(document)

    def rotate_web_session_key(self) -> str:
        """Make a new web-session key current; only the one before it stays readable."""
        self.web_session_keys()
        self._refresh(force=True)
        with self._lock:
            document = json.loads(json.dumps(self._doc))
            sessions = document["web_session"]
            previous = sessions["current"]
            key_id = _new_id("ws", len(sessions["keys"]) + 1)
            sessions["keys"] = {
                previous: sessions["keys"][previous],
                key_id: {"key": _b64(os.urandom(KEY_BYTES)), "created_at": _now()},
            }
            sessions["current"] = key_id
            self._persist(document)
            return key_id

    # -- audit (legacy) ---------------------------------------------------------------

    def audit_signing_key(self) -> Ed25519PrivateKey:
        """The audit key of logs signed before the audit key had its own file (legacy)."""
        return Ed25519PrivateKey.from_private_bytes(_unb64(self._doc["audit_signing_key"]))
