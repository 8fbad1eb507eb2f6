"""Readiness while the Temporal frontend rolls its client connections.

The frontend closes each connection after `frontend.keepAliveMaxConnectionAge` (five
minutes by default) with an HTTP/2 GOAWAY. A health check sent at that moment fails
although the server is serving; `/readyz` once said "unavailable: temporal" in CI so.
Here a real dev server rolls them every 100 ms, and probes run against it: the same
probes without retries fail (the fault is there), with them none does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from api.readiness import temporal_serving
from services.runtime import Runtime
from services.settings import Settings
from workflows.binaries import SERVER_STARTUP_TIMEOUT, temporal_binary

pytestmark = pytest.mark.integration

ROLL = "100ms"
PROBERS = 8


@pytest.fixture(scope="module")
async def rolling(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    """A client of a dev server that closes every connection after about 100 ms."""
    directory: Path = tmp_path_factory.mktemp("rolling-temporal")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary("temporal"),
        dev_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
        dev_server_database_filename=str(directory / "temporal.db"),
        dev_server_extra_args=[
            "--dynamic-config-value",
            f'frontend.keepAliveMaxConnectionAge="{ROLL}"',
            "--dynamic-config-value",
            f'frontend.keepAliveMaxConnectionAgeGrace="{ROLL}"',
        ],
        ip="127.0.0.1",
        ui=False,
    )
    try:
        yield env.client
    finally:
        await env.shutdown()


async def _failures(probe: Callable[[], Awaitable[bool]], seconds: float) -> list[str]:
    """What `PROBERS` concurrent probes, each called again as soon as it answers, said
    other than True during `seconds`."""
    failures: list[str] = []
    end = time.monotonic() + seconds

    async def prober() -> None:
        while time.monotonic() < end:
            try:
                if not await asyncio.wait_for(probe(), timeout=5):
                    failures.append("not serving")
            except Exception as exc:  # noqa: BLE001 - the answer under test
                failures.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(prober() for _ in range(PROBERS)))
    return failures


async def test_a_health_check_without_retries_meets_a_closing_connection(
    rolling: Client,
) -> None:
    """The fault is real: otherwise the next test could not fail."""

    async def bare() -> bool:
        return await rolling.service_client.check_health(retry=False)

    failures: list[str] = []
    for _ in range(6):  # at most 30 s; about one failure per second is usual
        failures += await _failures(bare, 5)
        if failures:
            break
    assert failures, "no probe met a closing connection: the server did not roll them"


async def test_the_readiness_probe_says_serving_while_connections_roll(
    rolling: Client,
) -> None:
    assert await _failures(lambda: temporal_serving(rolling), 10) == []


async def test_readyz_says_ready_while_connections_roll(
    rolling: Client, settings: Settings, runtime: Runtime
) -> None:
    app = create_app(settings, runtime=runtime, temporal=rolling)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:

        async def ready() -> bool:
            answer = await api.get("/readyz")
            return bool(answer.status_code == 200 and answer.json()["checks"]["temporal"] == "ok")

        assert await _failures(ready, 5) == []
