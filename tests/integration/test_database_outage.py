"""The API and the worker while the database or Temporal cannot be reached (a restart).

The API answers 503 problem+json with Retry-After, never a 500, and /readyz says the
database is down; the worker keeps running (its activities fail and Temporal retries them).
The database that cannot be reached is a PostgreSQL URL on a port where nothing listens: the
driver's own "connection refused", on both the SQLite and the PostgreSQL run. Temporal and
the identity provider (JWKS) are the real ones. tests/reliability restarts a real PostgreSQL
under load.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from services import idempotency
from services.crypto import data_converter
from services.models import Consent
from services.runtime import Runtime
from services.settings import Settings
from tests.integration.journey import OFFICE, Journey, consent_body, new_referral
from tests.tokens import TokenMinter
from workflows.binaries import SERVER_STARTUP_TIMEOUT, temporal_binary

pytestmark = pytest.mark.integration


def _unreachable_database() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # nothing listens there once the probe socket is closed
    return f"postgresql+psycopg://referral:referral@127.0.0.1:{port}/referral_test"


def _assert_retry_later(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert int(resp.headers["retry-after"]) > 0
    assert resp.json()["type"].startswith("urn:referral:problem:")
    assert "psycopg" not in resp.text and "127.0.0.1" not in resp.text  # no driver detail


async def test_requests_get_503_with_retry_after_while_the_database_is_down(
    settings: Settings, dev_server: WorkflowEnvironment, minter: TokenMinter, tmp_path: Path
) -> None:
    down = settings.model_copy(
        update={"database_url": _unreachable_database(), "data_dir": tmp_path}
    )
    runtime = Runtime.build(down)
    app = create_app(down, runtime=runtime, temporal=dev_server.client)
    headers = minter.headers(*OFFICE)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
            _assert_retry_later(await api.get("/api/v1/referrals", headers=headers))
            created = await api.post(
                "/api/v1/referrals",
                json=new_referral(),
                headers={**headers, "Idempotency-Key": "db-down-create"},
            )
            _assert_retry_later(created)
            ready = await api.get("/readyz")
            _assert_retry_later(ready)
            assert ready.json()["checks"]["database"] == "unavailable"
    finally:
        runtime.close()


async def test_the_worker_keeps_running_while_the_database_is_down(
    settings: Settings, dev_server: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Its loops (reconciler, tree heads) meet the database error and go on; the process
    exiting would stop every referral's activities until someone restarts it."""
    env = {
        **os.environ,
        "REFERRAL_ENVIRONMENT": "test",
        "REFERRAL_DATA_DIR": str(tmp_path),
        "REFERRAL_DATABASE_URL": _unreachable_database(),
        "REFERRAL_KEYRING_PATH": str(settings.keyring_path),
        "REFERRAL_TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host,
        "REFERRAL_TEMPORAL_TASK_QUEUE": f"db-down-{tmp_path.name}",
        "REFERRAL_OTEL_EXPORTER": "none",
        "REFERRAL_AUDIT_STH_EVERY_SECONDS": "0.5",
        "REFERRAL_RECONCILE_EVERY_SECONDS": "1",
    }
    log = tmp_path / "worker.log"
    referral = str(Path(sys.executable).parent / "referral")
    with log.open("ab") as out:
        worker = subprocess.Popen([referral, "worker"], env=env, stdout=out, stderr=out)
    try:
        # long enough for two heartbeats (5 s each), so the tree head and the reconciler
        # have each tried the database at least once
        for _ in range(240):
            await asyncio.sleep(0.05)
            if worker.poll() is not None:
                break
        if worker.poll() is None:
            await asyncio.sleep(11)
        assert worker.poll() is None, log.read_text()[-3000:]
        output = log.read_text()
        assert "worker running" in output
        assert "signing the audit tree head failed" in output, output[-3000:]
    finally:
        worker.terminate()
        worker.wait(timeout=30)


async def test_a_step_whose_update_may_have_reached_the_workflow_keeps_its_key_claimed(
    api: httpx.AsyncClient,
    settings: Settings,
    runtime: Runtime,
    minter: TokenMinter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Temporal goes away while a step's update is sent: the answer is 503 and whether the
    update arrived is unknown. The retry must not decide the step afresh (on a state the step
    may have made, an accepted offer cannot be accepted): it is told to wait while the claim
    lasts, then takes the claim over and asks Temporal for the update's outcome."""
    journey = Journey(api, minter)
    await journey.create()
    # An API whose Temporal server stops after the client connected to it (a restart).
    gone = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary("temporal"),
        dev_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
        data_converter=data_converter(runtime.keyring),
        ip="127.0.0.1",
        ui=False,
    )
    await gone.shutdown()
    cut_off = httpx.ASGITransport(app=create_app(settings, runtime=runtime, temporal=gone.client))
    path = f"/api/v1/referrals/{journey.id}/consent"
    body = consent_body()  # the same request each time
    headers = {**minter.headers(*OFFICE), "Idempotency-Key": f"in-doubt-{journey.id}"}
    async with httpx.AsyncClient(transport=cut_off, base_url="http://testserver") as cut:
        _assert_retry_later(await cut.post(path, json=body, headers=headers))

    retried = await api.post(path, json=body, headers=headers)
    assert retried.status_code == 409, retried.text  # not decided again while in doubt
    assert retried.json()["type"] == "urn:referral:problem:idempotency-key-in-use"

    monkeypatch.setattr(idempotency, "STALE_CLAIM", timedelta(0))
    taken_over = await api.post(path, json=body, headers=headers)
    assert taken_over.status_code == 200, taken_over.text  # the update never arrived: run now
    again = await api.post(path, json=body, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == journey.id
    with Session(runtime.engine) as session:
        consents = session.exec(
            select(Consent).where(Consent.referral_id == uuid.UUID(str(journey.id)))
        ).all()
    assert len(consents) == 1
    # at rest before the next test: tests/integration/test_bad_requests.py counts the rows
    # of every referral, and the offers this consent starts write one
    await journey.wait_stage("offered")
