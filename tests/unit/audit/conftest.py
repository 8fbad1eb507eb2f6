"""Fixtures for the audit log tests: a fresh audit database (SQLite, and PostgreSQL if set)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, event, inspect, text
from sqlmodel import SQLModel

from services.audit.keys import key_id_of
from services.audit.log import AuditLog
from services.audit.models import (
    AUDIT_ENTRY_TABLE,
    AUDIT_TREE_HEAD_TABLE,
    AUDIT_TREE_NODE_TABLE,
    install_append_only_triggers,
    remove_append_only_triggers,
)
from services.audit.witness import (
    COSIGNATURE_TABLE,
    install_cosignature_triggers,
    remove_cosignature_triggers,
)
from services.db import make_engine

POSTGRES_URL = os.environ.get("REFERRAL_TEST_DATABASE_URL", "")
AUDIT_TABLES = [AUDIT_ENTRY_TABLE, AUDIT_TREE_HEAD_TABLE, AUDIT_TREE_NODE_TABLE, COSIGNATURE_TABLE]


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            "postgresql",
            id="postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    not POSTGRES_URL.startswith("postgresql"),
                    reason="REFERRAL_TEST_DATABASE_URL does not name a PostgreSQL database",
                ),
            ],
        ),
    ]
)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on an empty audit schema with the append-only triggers installed."""
    if request.param == "sqlite":
        yield from _audit_engine(f"sqlite:///{tmp_path / 'audit.db'}")
        return
    # PostgreSQL: a schema of this test's own in the suite's database, alone on the search
    # path (with public on it, "does the table exist" would see the session's tables), so
    # the audit tables dropped here are never the session's: the workflow tests after these
    # write their audit entries there
    schema = f"audit_unit_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    session_tables = _audit_tables_in_public(admin)
    try:
        yield from _audit_engine(POSTGRES_URL, schema=schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        left = _audit_tables_in_public(admin)
        admin.dispose()
    assert left == session_tables, "the suite's own audit tables were touched"


def _audit_tables_in_public(engine: Engine) -> set[str]:
    names = set(inspect(engine).get_table_names(schema="public"))
    return {t.name for t in AUDIT_TABLES} & names


def _audit_engine(url: str, *, schema: str | None = None) -> Iterator[Engine]:
    engine = make_engine(url)
    if schema is not None:
        # on every new connection, outside a transaction (a rollback would undo it); the
        # engine's own connect options already carry its statement timeout
        @event.listens_for(engine, "connect")
        def _search_path(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            autocommit = dbapi_connection.autocommit
            dbapi_connection.autocommit = True
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f'SET SESSION search_path TO "{schema}"')
            dbapi_connection.autocommit = autocommit

        with engine.connect() as conn:
            assert conn.execute(text("SHOW search_path")).scalar().strip('"') == schema
    with engine.begin() as conn:
        SQLModel.metadata.drop_all(conn, tables=AUDIT_TABLES)
        SQLModel.metadata.create_all(conn, tables=AUDIT_TABLES)
        install_append_only_triggers(conn)
        install_cosignature_triggers(conn)
    yield engine
    with engine.begin() as conn:
        remove_cosignature_triggers(conn)
        remove_append_only_triggers(conn)
        SQLModel.metadata.drop_all(conn, tables=AUDIT_TABLES)
    engine.dispose()


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    """The audit log's tree head signing key."""
    return Ed25519PrivateKey.generate()


@pytest.fixture
def make_log(engine: Engine, signing_key: Ed25519PrivateKey) -> Callable[..., AuditLog]:
    """Build an audit log on the test database (keyword arguments override defaults)."""

    def build(**overrides: Any) -> AuditLog:
        options: dict[str, Any] = {
            "signing_key": signing_key,
            # Heads name their key by its fingerprint, as the runtime's keys do.
            "key_id": key_id_of(signing_key),
            "sth_every_entries": 1000,
            "sth_every_seconds": 3600.0,
        }
        options.update(overrides)
        return AuditLog(engine, **options)

    return build
