"""The 0002_audit migration builds the tables the models describe, append-only."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from audit_factories import audit_event, execute_raw
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import MetaData, insert, inspect
from sqlalchemy.exc import DBAPIError

from services.audit import merkle
from services.audit.log import AuditLog
from services.audit.models import AUDIT_ENTRY_TABLE, AUDIT_TREE_HEAD_TABLE, new_entry
from services.audit.witness import (
    COSIGNATURE_TABLE,
    TreeHead,
    Witness,
    store_cosignature,
    stored_cosignatures,
)
from services.db import alembic_config, make_engine


def test_the_migration_creates_append_only_audit_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'migrated.db'}"
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            inspector = inspect(conn)
            for table in (AUDIT_ENTRY_TABLE, AUDIT_TREE_HEAD_TABLE):
                migrated = {c["name"] for c in inspector.get_columns(table.name)}
                assert migrated == {c.name for c in table.columns}
        log = AuditLog(engine, Ed25519PrivateKey.generate(), "k1", sth_every_entries=2)
        log.append([audit_event(0), audit_event(1), audit_event(2)])
        assert log.verify().ok
        with pytest.raises(DBAPIError, match="append-only"):
            execute_raw(engine, "DELETE FROM audit_entry")
        with pytest.raises(DBAPIError, match="append-only"):
            execute_raw(engine, "UPDATE audit_tree_head SET key_id = 'k2'")
    finally:
        engine.dispose()
    command.downgrade(alembic_config(url), "0001_core")


def test_the_witness_migration_creates_an_append_only_cosignature_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'witness.db'}"
    # to the head: the log writes entries as the models describe them now, in its stored tree
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            metadata = MetaData()
            COSIGNATURE_TABLE.to_metadata(metadata)
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
            # the other tables of the schema are not in this metadata; only ours counts
            assert [d for d in differences if d[0] not in ("remove_table", "remove_index")] == []
        signing_key = Ed25519PrivateKey.generate()
        log = AuditLog(engine, signing_key, "k1")
        log.append([audit_event(0)])
        witness_key = Ed25519PrivateKey.generate()
        witness = Witness(witness_key, tmp_path / "state.json", {"k1": signing_key.public_key()})
        cosignature = witness.cosign(TreeHead.from_stored(log.sign_tree_head()), [])
        assert store_cosignature(engine, cosignature)
        assert not store_cosignature(engine, cosignature)  # once per head and witness
        with engine.connect() as conn:
            assert stored_cosignatures(conn) == [cosignature]
        with pytest.raises(DBAPIError, match="append-only"):
            execute_raw(engine, "DELETE FROM audit_cosignature")
    finally:
        engine.dispose()
    command.downgrade(alembic_config(url), "0004_web_session")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert not inspect(conn).has_table(COSIGNATURE_TABLE.name)
    finally:
        engine.dispose()


def test_the_audit_events_migration_adds_the_source_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    command.upgrade(alembic_config(url), "0010_audit_events")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("audit_entry")}
            assert {"person_pseudonym", "source_node", "client_address"} <= columns
            messages = {c["name"] for c in inspect(conn).get_columns("justice_message")}
            assert "received_at" in messages
    finally:
        engine.dispose()
    command.upgrade(alembic_config(url), "head")  # the log appends into its stored tree
    engine = make_engine(url)
    try:
        log = AuditLog(engine, Ed25519PrivateKey.generate(), "k1")
        event = audit_event(0).model_copy(
            update={"source_node": "node-a", "client_address": "192.0.2.7"}
        )
        log.append([audit_event(1), event])
        log.sign_tree_head()
        assert log.verify().ok
        with pytest.raises(DBAPIError, match="append-only"):
            execute_raw(engine, "UPDATE audit_entry SET client_address = '192.0.2.8'")
    finally:
        engine.dispose()
    command.downgrade(alembic_config(url), "0007_audit_witness")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("audit_entry")}
            assert "source_node" not in columns
    finally:
        engine.dispose()


def test_the_tiles_migration_builds_the_stored_tree_of_an_existing_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tiles.db'}"
    command.upgrade(alembic_config(url), "0007_audit_witness")
    engine = make_engine(url)
    now = datetime.now(UTC)
    entries = [new_entry(audit_event(n), index=n, recorded_at=now) for n in range(21)]
    try:
        # Entries written before the stored tree existed.
        with engine.begin() as conn:
            # the columns of the log as it was then (later migrations add some)
            existing = {c["name"] for c in inspect(conn).get_columns("audit_entry")}
            columns = [c.name for c in AUDIT_ENTRY_TABLE.columns if c.name in existing]
            conn.execute(
                insert(AUDIT_ENTRY_TABLE), [{c: getattr(e, c) for c in columns} for e in entries]
            )
    finally:
        engine.dispose()
    command.upgrade(alembic_config(url), "0011_audit_tiles")
    engine = make_engine(url)
    leaves = [bytes.fromhex(e.leaf_hash) for e in entries]
    try:
        log = AuditLog(engine, Ed25519PrivateKey.generate(), "k1")
        assert log.inclusion_proof(13, 21).path == [
            h.hex() for h in merkle.inclusion_proof(13, leaves)
        ]
        [entry] = log.append([audit_event(21)])  # the log continues the backfilled tree
        leaves.append(bytes.fromhex(entry.leaf_hash))
        assert log.sign_tree_head().root_hash == merkle.root(leaves).hex()
        assert log.verify().ok
        with pytest.raises(DBAPIError, match="append-only"):
            execute_raw(engine, "DELETE FROM audit_tree_node")
    finally:
        engine.dispose()
    command.downgrade(alembic_config(url), "0007_audit_witness")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert not inspect(conn).has_table("audit_tree_node")
    finally:
        engine.dispose()
