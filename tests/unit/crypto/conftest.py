"""Fixtures of the crypto tests: a tmp_path key ring and an in-memory SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine

from services.crypto import FileKeyRing, PersonalDataVault, ReferralDataKey


def make_store() -> Engine:
    """An in-memory SQLite engine holding only the data-key table."""
    engine = create_engine(
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    SQLModel.metadata.create_all(engine, tables=[ReferralDataKey.__table__])  # type: ignore[attr-defined]
    return engine


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "keyring.json"


@pytest.fixture
def keyring(keyring_path: Path) -> FileKeyRing:
    return FileKeyRing.create(keyring_path)


@pytest.fixture
def engine() -> Iterator[Engine]:
    """Overrides the suite's migrated database: these tests need only the data-key table."""
    engine = make_store()
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session on the in-memory store."""
    with Session(engine) as session:
        yield session


@pytest.fixture(scope="module")
def shared_store(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PersonalDataVault, Engine]]:
    """A vault and store shared by the examples of a property test."""
    keyring = FileKeyRing.create(tmp_path_factory.mktemp("ring") / "keyring.json")
    engine = make_store()
    yield PersonalDataVault(keyring), engine
    engine.dispose()


@pytest.fixture
def vault(keyring: FileKeyRing) -> PersonalDataVault:
    return PersonalDataVault(keyring)
