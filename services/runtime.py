"""The long-lived objects of one process (API, worker or CLI), built from the settings."""

from __future__ import annotations

import gc
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from services.access import Gatekeeper
from services.access_process import ProcessAccessWriter
from services.audit.keys import AuditKeyFile, key_id_of
from services.audit.log import AuditLog
from services.audit.models import AUDIT_TREE_HEAD_TABLE
from services.crypto import (
    FileKeyRing,
    KeyRing,
    PersonalDataVault,
    Pseudonymizer,
    ReferralPayloadKeys,
)
from services.db import make_engine
from services.settings import AccessWriterKind, Settings


def load_keyring(settings: Settings) -> KeyRing:
    """The key ring; the development file key ring is refused in production by default."""
    if settings.is_production and not settings.allow_file_keyring_in_production:
        raise RuntimeError(
            "the file key ring is for development; configure a KMS key ring in production"
        )
    return FileKeyRing.load_or_create(settings.keyring_path)


def load_audit_keys(settings: Settings, engine: Engine, keyring: KeyRing) -> AuditKeyFile:
    """The audit signing key, kept apart from the key ring (its own file and rotation).

    A log whose heads the key ring's old audit key signed (before the key had a file of
    its own) gets that key as the first of the chain, endorsing the new one, so those
    heads keep verifying; a new log does not trust the key ring's key at all.
    """
    if settings.is_production and not settings.allow_file_audit_key_in_production:
        raise RuntimeError(
            "the file audit key is for development; configure a KMS or HSM key in production"
        )
    path = settings.audit_key_file
    if path.exists():
        return AuditKeyFile.load(path)
    legacy = keyring.audit_signing_key()
    try:
        with engine.connect() as conn:
            signed_by_legacy = conn.execute(
                select(AUDIT_TREE_HEAD_TABLE.c.tree_size)
                .where(AUDIT_TREE_HEAD_TABLE.c.key_id == key_id_of(legacy))
                .limit(1)
            ).first()
    except SQLAlchemyError:
        signed_by_legacy = None  # no audit tables yet: nothing was signed
    return AuditKeyFile.load_or_create(
        path, previous=legacy if signed_by_legacy is not None else None
    )


def request_engine(settings: Settings) -> Engine:
    """The engine requests and activities use, with the pool limits of the settings."""
    return make_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        statement_timeout=settings.db_statement_timeout_seconds,
    )


# How long a read on the event loop may wait for SQLite's lock (a WAL reader waits only
# while a checkpoint resets the log): the loop serves every request, so it gives up soon
# and the read is answered 503 rather than stall the others.
EVENT_LOOP_READ_TIMEOUT_SECONDS = 0.5


def event_loop_engine(engine: Engine) -> Engine | None:
    """One connection for the reads the API takes on its event loop, or None (then every
    read takes a thread of the pool). Only for a database in a local SQLite file: a read
    there is a file read that waits on no network and, in WAL mode, on no writer, and this
    connection is the loop's alone, so it never waits for the request pool either.

    Served on the loop, a read has no thread to hand over to and back from and no other
    request thread to share the interpreter with: under load, that contention cost more CPU
    than the read itself. PostgreSQL is a network away: its reads stay on threads."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return make_engine(
        url.render_as_string(hide_password=False),
        pool_size=1,
        max_overflow=0,
        pool_timeout=EVENT_LOOP_READ_TIMEOUT_SECONDS,
        statement_timeout=EVENT_LOOP_READ_TIMEOUT_SECONDS,
    )


# How many more objects made than freed start a collection of the youngest generation
# (Python's default: 700); see `settle_heap`.
YOUNG_GENERATION_THRESHOLD = 10_000


def settle_heap() -> int:
    """For a long-running process once it has started (`referral api`, `referral worker`):
    collect what start-up left behind, then move every object still alive (modules, routes,
    mappers, policies, keys) into the garbage collector's permanent generation, which no
    collection scans. Returns how many objects were settled.

    The API holds about 210,000 such objects. A full collection scanned them all, in the
    thread that happened to trigger it, usually the event loop: measured under load, it
    paused the loop, and every request in flight, for 125 to 160 ms, twice in 20 seconds.
    Afterwards a full collection scans only what was made since start-up.

    Then the youngest generation is collected every `YOUNG_GENERATION_THRESHOLD` net
    allocations instead of every 700. Each collection of it moves whatever is alive at that
    moment to an older generation: under load, the objects of every request in flight. At
    700, with 32 reads in flight, that filled the oldest generation so fast that the API ran
    a full collection every half second, of 20 to 28 ms each (every request in flight
    waiting), after the lifecycle rows of `make bench`; in the GET rows alone its collections
    took 0.9 s in all. At 10,000 the same rows took 0.4 s, with one full collection instead
    of 25, and a young collection takes about 2 ms."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
    return gc.get_freeze_count()


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    # The audit writer's own small pool: an append never waits for a request's connection.
    audit_engine: Engine
    keyring: KeyRing
    audit_keys: AuditKeyFile
    vault: PersonalDataVault
    # the per-referral Temporal payload keys: the codec's, and the purge destroys them
    payload_keys: ReferralPayloadKeys
    audit: AuditLog
    gatekeeper: Gatekeeper
    # the event loop's own connection for reads (`event_loop_engine`), None on PostgreSQL
    loop_engine: Engine | None = None

    @property
    def pseudonymizer(self) -> Pseudonymizer:
        """Pseudonyms under the current pseudonym key (read afresh: a rotation in another
        process takes effect within a second, without a restart)."""
        return self.pseudonymizers()[0]

    def pseudonymizers(self) -> list[Pseudonymizer]:
        """One per live pseudonym key version, current first (to find what older versions
        made, until the rotation has re-derived it)."""
        return [Pseudonymizer(key, key_id) for key_id, key in self.keyring.pseudonym_keys()]

    def close(self) -> None:
        """Release the database connections (CLI commands and workers end with this)."""
        self.gatekeeper.close()
        self.engine.dispose()
        self.audit_engine.dispose()
        if self.loop_engine is not None:
            self.loop_engine.dispose()

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
        audit_keys = load_audit_keys(settings, engine, keyring)
        audit = AuditLog(
            audit_engine,
            audit_keys.signing_key(),
            audit_keys.key_id,
            sth_every_entries=settings.audit_sth_every_entries,
            sth_every_seconds=settings.audit_sth_every_seconds,
            verify_keys=audit_keys.verify_keys(),
            key_source=audit_keys.current,
        )
        payload_keys = ReferralPayloadKeys(engine, keyring)
        runtime = cls(
            settings=settings,
            engine=engine,
            audit_engine=audit_engine,
            keyring=keyring,
            audit_keys=audit_keys,
            vault=PersonalDataVault(keyring),
            payload_keys=payload_keys,
            audit=audit,
            gatekeeper=Gatekeeper(
                audit=audit,
                pseudonym_key=keyring.audit_pseudonym_key(),
                source_node=settings.audit_source_node,
                engine=audit_engine,
                payload_keys=payload_keys,
                batch_window_seconds=settings.audit_batch_window_ms / 1000,
            ),
            loop_engine=event_loop_engine(engine),
        )
        if (
            runtime.loop_engine is not None
            and settings.audit_access_writer is AccessWriterKind.PROCESS
        ):
            runtime.gatekeeper.writer = ProcessAccessWriter(settings)
        return runtime
