"""Shared fixtures: one migrated database per session (SQLite, or PostgreSQL when
REFERRAL_TEST_DATABASE_URL is set), demo data, and the Temporal test environments."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from services import telemetry
from services.db import make_engine, migrate, session_scope
from services.demo import load_demo
from services.settings import OtelExporter, Settings
from workflows.binaries import SERVER_STARTUP_TIMEOUT, temporal_binary


def _test_database_url(tmp_root: Path) -> str:
    url = os.environ.get("REFERRAL_TEST_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{tmp_root / 'test.db'}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = _test_database_url(tmp_path_factory.mktemp("db"))
    if url.startswith("postgresql"):
        # a clean schema for this run: the suite may run more than once on one server
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    else:
        _refuse_opening_in_process(Path(url.split("///", 1)[1]))
    migrate(url)
    return url


def _refuse_opening_in_process(database: Path) -> None:
    """No test opens the session's SQLite files with open(): closing that descriptor drops
    SQLite's POSIX locks in this process (sqlite.org/howtocorrupt.html, 2.2), and the
    workers other tests start then corrupt what this process reads. Read them with
    tests/sqlite_files.py (another process). SQLite's own opens are not Python's; nor is
    the writers' lock file (services/write_turns.py), a file of its own, whose descriptor
    holds a `flock`, which no other file's descriptor drops."""
    prefix = str(database.resolve())
    turns = prefix + "-writer.lock"

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], str | Path):
            path = str(Path(args[0]).resolve())
            if path.startswith(prefix) and path != turns:
                raise PermissionError(f"the session database is read by another process: {args[0]}")

    sys.addaudithook(hook)


@pytest.fixture(scope="session", autouse=True)
def traces_in_memory() -> None:
    """The process's tracer provider is global and installed once (`telemetry.configure`):
    the session installs the in-memory one the tracing tests read, before any test builds
    an app, so that which test runs first does not decide it."""
    telemetry.configure(Settings(environment="test", otel_exporter=OtelExporter.MEMORY))


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        load_demo(session=session)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's key files (key ring, audit signing key): every runtime built in the
    session shares them, as the processes of one deployment do."""
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def activity_executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=16) as executor:
        yield executor


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_binary("temporal-test-server"),
        test_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
        data_converter=pydantic_data_converter,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4()}"


@pytest.fixture(scope="session")
def keycloak() -> Iterator[Any]:
    """The real Keycloak with the `referral` realm, once per session (free ports, 127.0.0.1).

    Started through `deploy/keycloak/server.py`, the scripts developers use. Without
    Java 17+ the tests that need it are skipped with the reason.
    """
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:  # `deploy/` is not an installed package
        sys.path.insert(0, root)
    from deploy.keycloak.server import KeycloakUnavailable, find_java, running_keycloak

    try:
        find_java()
    except KeycloakUnavailable as exc:
        pytest.skip(f"Keycloak needs Java 17+ and none was found: {exc}")
    with running_keycloak() as info:
        yield info
