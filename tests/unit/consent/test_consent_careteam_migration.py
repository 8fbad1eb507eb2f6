"""The 0005 migration gives the consent and care-team tables exactly the models' columns,
keeps the consents stored before it, and its downgrade removes what it added."""

from __future__ import annotations

import uuid
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel

import services.audit.models  # noqa: F401 - every table in SQLModel.metadata
import services.crypto  # noqa: F401
import services.models  # noqa: F401
from services.db import alembic_config


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'migration.db'}"


def test_upgrade_matches_the_models(tmp_path: Path) -> None:
    """The whole chain, up to the newest migration, gives exactly the models' schema."""
    url = _url(tmp_path)
    command.upgrade(alembic_config(url), "head")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
            assert diff == []
    finally:
        engine.dispose()


def test_existing_consents_survive_and_downgrade_removes_the_additions(tmp_path: Path) -> None:
    url = _url(tmp_path)
    config = alembic_config(url)
    command.upgrade(config, "0004_web_session")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            tables = set(inspect(connection).get_table_names())
            assert "consent" in tables and "care_team_assignment" not in tables
            # a consent row as 0004 knew it (foreign keys are not enforced by bare SQLite)
            connection.execute(
                text(
                    "INSERT INTO consent (id, referral_id, version, given, purposes, categories,"
                    " recipients, disclosers, status, recorded_by, recorded_by_organisation,"
                    " evidence_hash, valid_from) VALUES (:id, :r, 1, 1, '[]', '[]', '[]', '[]',"
                    " 'active', 's', 'o', '', '2026-01-01 00:00:00')"
                ),
                {"id": uuid.uuid4().hex, "r": uuid.uuid4().hex},
            )
        command.upgrade(config, "0005_consent_careteam")
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT right_to_revoke_explained, signed_by FROM consent")
            ).one()
            assert tuple(row) == (0, None)
        command.downgrade(config, "0004_web_session")
        with engine.connect() as connection:
            inspector = inspect(connection)
            assert "care_team_assignment" not in inspector.get_table_names()
            columns = {c["name"] for c in inspector.get_columns("consent")}
            assert "signed_by" not in columns and "right_to_revoke_explained" not in columns
            assert connection.execute(text("SELECT count(*) FROM consent")).scalar() == 1
    finally:
        engine.dispose()
