"""The long-lived objects of one process (API, worker or CLI), built from the settings."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine

from services.access import Gatekeeper
from services.audit.log import AuditLog
from services.crypto import FileKeyRing, KeyRing, PersonalDataVault, Pseudonymizer
from services.db import make_engine
from services.settings import Settings


def load_keyring(settings: Settings) -> KeyRing:
    """The key ring; the development file key ring is refused in production by default."""
    if settings.is_production and not settings.allow_file_keyring_in_production:
        raise RuntimeError(
            "the file key ring is for development; configure a KMS key ring in production"
        )
    return FileKeyRing.load_or_create(settings.keyring_path)


def audit_key_id(keyring: KeyRing) -> str:
    """A key id for tree-head signatures: a fingerprint of the public key."""
    public = (
        keyring.audit_signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return "ed25519:" + hashlib.sha256(public).hexdigest()[:16]


def request_engine(settings: Settings) -> Engine:
    """The engine requests and activities use, with the pool limits of the settings."""
    return make_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        statement_timeout=settings.db_statement_timeout_seconds,
    )


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    # The audit writer's own small pool: an append never waits for a request's connection.
    audit_engine: Engine
    keyring: KeyRing
    vault: PersonalDataVault
    pseudonymizer: Pseudonymizer
    audit: AuditLog
    gatekeeper: Gatekeeper

    def close(self) -> None:
        """Release the database connections (CLI commands and workers end with this)."""
        self.engine.dispose()
        self.audit_engine.dispose()

    @classmethod
    def build(cls, settings: Settings, *, engine: Engine | None = None) -> Runtime:
        """Everything a process needs, from the settings."""
        engine = engine or request_engine(settings)
        audit_engine = make_engine(
            settings.database_url,
            pool_size=settings.audit_pool_size,
            max_overflow=0,
            pool_timeout=settings.audit_pool_timeout_seconds,
            statement_timeout=settings.db_statement_timeout_seconds,
        )
        keyring = load_keyring(settings)
        audit = AuditLog(
            audit_engine,
            keyring.audit_signing_key(),
            audit_key_id(keyring),
            sth_every_entries=settings.audit_sth_every_entries,
            sth_every_seconds=settings.audit_sth_every_seconds,
        )
        return cls(
            settings=settings,
            engine=engine,
            audit_engine=audit_engine,
            keyring=keyring,
            vault=PersonalDataVault(keyring),
            pseudonymizer=Pseudonymizer(keyring.pseudonym_key()),
            audit=audit,
            gatekeeper=Gatekeeper(audit=audit, pseudonym_key=keyring.pseudonym_key()),
        )
