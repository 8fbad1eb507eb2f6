"""A step the referral's workflow does not answer in time is a 503 (never a 500 or a hang),
and its retry with the same Idempotency-Key ends with the step taken once."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from services import idempotency
from services.models import Consent
from services.runtime import Runtime
from tests.integration.journey import OFFICE, Journey, consent_body
from tests.tokens import TokenMinter

pytestmark = pytest.mark.integration


async def test_a_step_not_answered_in_time_is_503_and_its_keyed_retry_takes_it_once(
    api: httpx.AsyncClient,
    minter: TokenMinter,
    runtime: Runtime,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    j = Journey(api, minter)
    await j.create()
    await j.wait_stage("awaiting_consent")
    body = consent_body()
    headers = {**minter.headers(*OFFICE), "Idempotency-Key": f"slow-{uuid.uuid4()}"}
    path = f"/api/v1/referrals/{j.id}/consent"

    impatient = runtime.settings.model_copy(update={"workflow_update_timeout_seconds": 0.001})
    monkeypatch.setattr(runtime, "settings", impatient)
    slow = await api.post(path, json=body, headers=headers)
    assert slow.status_code == 503, slow.text
    assert slow.headers["content-type"] == "application/problem+json"
    assert slow.json()["type"] == "urn:referral:problem:unavailable"

    monkeypatch.undo()
    # the claim is kept (the step may still be taken): a retry at once is told to wait...
    early = await api.post(path, json=body, headers=headers)
    assert early.status_code == 409, early.text
    assert early.json()["type"] == "urn:referral:problem:idempotency-key-in-use"
    assert int(early.headers["retry-after"]) > 0
    # ...and once the claim is stale, the retry finishes the step or takes it, once. The
    # abandoned update may still be on its way through Temporal (an update whose first
    # workflow task was lost with the cancelled call waits for the server's 5 s speculative
    # task time-out): until it ends the retry is told to wait, and a client that honours
    # Retry-After gets its 200 within a bounded time.
    monkeypatch.setattr(idempotency, "STALE_CLAIM", timedelta(0))
    retry = await api.post(path, json=body, headers=headers)
    deadline = time.monotonic() + 90
    while retry.status_code == 409 and time.monotonic() < deadline:
        assert retry.json()["type"] == "urn:referral:problem:idempotency-key-in-use", retry.text
        await asyncio.sleep(int(retry.headers["retry-after"]))
        retry = await api.post(path, json=body, headers=headers)
    assert retry.status_code == 200, retry.text
    again = await api.post(path, json=body, headers=headers)
    assert again.status_code == 200, again.text
    with Session(engine) as session:
        consents = session.exec(
            select(Consent).where(col(Consent.referral_id) == uuid.UUID(str(j.id)))
        ).all()
    assert len(consents) == 1
