"""The 0002_audit migration builds the tables the models describe, append-only."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from audit_factories import audit_event, execute_raw
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError

from services.audit.log import AuditLog
from services.audit.models import AUDIT_ENTRY_TABLE, AUDIT_TREE_HEAD_TABLE
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
