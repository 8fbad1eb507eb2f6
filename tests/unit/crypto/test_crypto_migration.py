"""The 0003 migration creates exactly the table the `ReferralDataKey` model describes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import MetaData, create_engine, inspect

from services.crypto import ReferralDataKey

MIGRATION = (
    Path(__file__).resolve().parents[3] / "services" / "migrations" / "versions" / "0003_crypto.py"
)


def _load_migration() -> ModuleType:
    spec = importlib.util.spec_from_file_location("migration_0003_crypto", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_revision_chain() -> None:
    migration = _load_migration()
    assert migration.revision == "0003_crypto"
    assert migration.down_revision == "0002_audit"


def test_upgrade_matches_the_model_and_downgrade_removes_it() -> None:
    migration = _load_migration()
    engine = create_engine("sqlite://")
    try:
        with engine.begin() as connection:
            context = MigrationContext.configure(connection)
            with Operations.context(context):
                migration.upgrade()
            metadata = MetaData()
            ReferralDataKey.__table__.to_metadata(metadata)  # type: ignore[attr-defined]
            assert compare_metadata(context, metadata) == []
            with Operations.context(context):
                migration.downgrade()
            assert "referral_data_key" not in inspect(connection).get_table_names()
    finally:
        engine.dispose()
