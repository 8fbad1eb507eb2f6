"""The workflow tests' runtime: the real vault (so a purge really shreds) and the real
audit log (so every shredding is an entry), on the session's database and key files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from services.runtime import Runtime
from services.settings import Settings


@pytest.fixture(scope="session")
def runtime(database_url: str, engine: Engine, state_dir: Path) -> Iterator[Runtime]:
    settings = Settings(
        environment="test",
        data_dir=state_dir,
        database_url=database_url,
        keyring_path=state_dir / "keyring.json",
        demo_users_enabled=False,
    )
    runtime = Runtime.build(settings, engine=engine)
    yield runtime
    runtime.audit_engine.dispose()
