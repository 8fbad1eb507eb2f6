"""The API while the identity provider is down: 503 problem+json, and /readyz says why.

The JWKS is a real HTTP server (tests/tokens.py) that this test stops and starts again;
the API app, database and Temporal dev server are the real ones.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from services.runtime import Runtime
from services.settings import Settings
from tests.tokens import JwksServer, running_jwks

pytestmark = pytest.mark.integration


@pytest.fixture
async def outage(
    settings: Settings, runtime: Runtime, dev_server: WorkflowEnvironment
) -> AsyncIterator[tuple[JwksServer, httpx.AsyncClient]]:
    """An API whose identity provider is down from the start."""
    with running_jwks() as jwks:
        jwks.stop()
        own = settings.model_copy(update={"jwks_url": jwks.jwks_url, "jwks_refetch_seconds": 0})
        app = create_app(own, runtime=runtime, temporal=dev_server.client)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
            yield jwks, api


async def test_valid_tokens_get_503_while_the_identity_provider_is_down_then_200(
    outage: tuple[JwksServer, httpx.AsyncClient],
) -> None:
    jwks, api = outage
    headers = jwks.minter.headers("parket-antwerpen", "prosecutor")

    refused = await api.get("/api/v1/referrals", headers=headers)
    assert refused.status_code == 503
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"] == "urn:referral:problem:unavailable"
    assert "www-authenticate" not in refused.headers  # not a bad token: keep it, retry
    # the read of one referral checks its token in the thread that reads: the same answer
    one = await api.get(f"/api/v1/referrals/{uuid.uuid4()}", headers=headers)
    assert (one.status_code, one.json()["type"]) == (503, "urn:referral:problem:unavailable")
    ready = await api.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["identity_provider"] == "unavailable"
    assert ready.json()["detail"] == "unavailable: identity_provider"

    jwks.start()
    assert (await api.get("/api/v1/referrals", headers=headers)).status_code == 200
    ready = await api.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["identity_provider"] == "ok"


async def test_healthz_answers_without_the_identity_provider(
    outage: tuple[JwksServer, httpx.AsyncClient],
) -> None:
    _, api = outage
    assert (await api.get("/healthz")).json() == {"status": "ok"}


async def test_healthz_fails_while_no_request_thread_is_free(
    settings: Settings, runtime: Runtime, dev_server: WorkflowEnvironment
) -> None:
    """A process whose request threads are all stuck accepts connections but serves
    nothing (the wedged API of issue 12): its liveness check must say so."""
    own = settings.model_copy(update={"liveness_timeout_seconds": 0.5})
    app = create_app(own, runtime=runtime, temporal=dev_server.client)
    limiter = anyio.to_thread.current_default_thread_limiter()
    tokens, release = limiter.total_tokens, threading.Event()
    limiter.total_tokens = 2
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
        try:
            async with anyio.create_task_group() as stuck:
                for _ in range(2):
                    stuck.start_soon(anyio.to_thread.run_sync, release.wait)
                await anyio.sleep(0.1)
                try:
                    wedged = await api.get("/healthz")
                finally:
                    release.set()  # the stuck threads end however the check went
            assert wedged.status_code == 503
            assert wedged.headers["content-type"].startswith("application/problem+json")
            assert (await api.get("/healthz")).json() == {"status": "ok"}
        finally:
            limiter.total_tokens = tokens
