"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlmodel import SQLModel, create_engine

import services.audit.models  # noqa: F401 - every table in SQLModel.metadata
import services.crypto  # noqa: F401


@pytest.fixture
def engine() -> Iterator[Engine]:
    """An empty in-memory database with every table (a module may define its own)."""
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    yield engine
    engine.dispose()
