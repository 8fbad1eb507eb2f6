"""The request path under load and faults (issue 12): no stall, no orphan, no duplicate.

- Load: 64 authenticated reads and 16 creates at once against an app whose request pool
  holds two connections. Every answer is a success or a 503 problem+json, within a bound
  (never a hang), and every success has exactly one committed audit entry.
- Orphans: a create whose workflow start fails after its commit answers 503, yet its
  referral, its audit entry and its start intent are stored; the worker's reconciler starts
  the workflow, and a retry with the same Idempotency-Key returns the same referral.
- Duplicates: a step retried with the same Idempotency-Key takes effect once and repeats its
  first answer; the same key with another body is refused.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session, col, func, select
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api import routes as api_routes
from api.main import create_app
from services.audit.models import AuditEntry
from services.models import (
    Consent,
    JusticeMessage,
    Referral,
    StepAnswer,
    WorkflowStart,
)
from services.runtime import Runtime
from services.settings import Settings
from tests.integration.audit_probe import PROBLEM, assert_problem, new_request_id
from tests.integration.journey import CGG, OFFICE, Journey, consent_body, new_referral
from tests.tokens import TokenMinter
from workflows.reconciler import start_pending
from workflows.referral import workflow_id

LOAD_BOUND_SECONDS = 240


def _entries_of(engine: Engine, request_id: str) -> list[AuditEntry]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(AuditEntry)
                .where(AuditEntry.request_id == request_id)
                .order_by(col(AuditEntry.index))
            ).all()
        )


@pytest.fixture
async def small_pool(
    settings: Settings, dev_server: WorkflowEnvironment, worker: Worker
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """The app with a request pool of two connections and a one-connection audit writer."""
    tight = settings.model_copy(
        update={
            "db_pool_size": 2,
            "db_max_overflow": 0,
            "db_pool_timeout_seconds": 2.0,
            "audit_pool_size": 1,
        }
    )
    runtime = Runtime.build(tight)
    app: FastAPI = create_app(tight, runtime=runtime, temporal=dev_server.client)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c, runtime
    finally:
        runtime.close()


@pytest.fixture
async def pool_and_referral(
    small_pool: tuple[httpx.AsyncClient, Runtime], api: httpx.AsyncClient, minter: TokenMinter
) -> tuple[httpx.AsyncClient, Runtime, Journey]:
    """The small-pool app and a referral created (through the suite's app) to read."""
    client, runtime = small_pool
    j = Journey(api, minter)
    await j.create()
    return client, runtime, j


async def test_a_burst_on_a_tiny_pool_never_hangs_and_every_success_is_audited_once(
    pool_and_referral: tuple[httpx.AsyncClient, Runtime, Journey],
    minter: TokenMinter,
    engine: Engine,
) -> None:
    client, _, j = pool_and_referral
    office = minter.headers(*OFFICE)

    async def read() -> tuple[str, str, httpx.Response]:
        request_id = new_request_id("load-read")
        resp = await client.get(
            f"/api/v1/referrals/{j.id}", headers={**office, "X-Request-ID": request_id}
        )
        return "read", request_id, resp

    async def create() -> tuple[str, str, httpx.Response]:
        request_id = new_request_id("load-create")
        headers = {**office, "X-Request-ID": request_id, "Idempotency-Key": f"load-{uuid.uuid4()}"}
        resp = await client.post("/api/v1/referrals", json=new_referral(), headers=headers)
        return "create", request_id, resp

    burst = [read() for _ in range(64)] + [create() for _ in range(16)]
    results = await asyncio.wait_for(asyncio.gather(*burst), timeout=LOAD_BOUND_SECONDS)

    ok = {"read": 0, "create": 0}
    for kind, request_id, resp in results:
        if resp.status_code == 503:
            assert resp.headers["content-type"] == PROBLEM, resp.text
            # a refused or failed access disclosed nothing: no entry says it succeeded
            entries = _entries_of(engine, request_id)
            assert all(e.outcome != "success" or kind == "create" for e in entries), entries
            continue
        expected = 200 if kind == "read" else 201
        assert resp.status_code == expected, (kind, resp.status_code, resp.text[:300])
        ok[kind] += 1
        entries = _entries_of(engine, request_id)
        action = "referral.read" if kind == "read" else "referral.create"
        assert [(e.action, e.decision, e.outcome) for e in entries] == [
            (action, "permit", "success")
        ], (kind, [(e.action, e.outcome) for e in entries])
        assert entries[0].categories, "a success names the categories it disclosed"
    assert ok["read"] > 0 and ok["create"] > 0, ok


async def test_a_create_whose_start_fails_after_commit_is_started_by_the_reconciler(
    api: httpx.AsyncClient,
    minter: TokenMinter,
    engine: Engine,
    settings: Settings,
    runtime: Runtime,
    dev_server: WorkflowEnvironment,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def temporal_gone(**_: Any) -> None:
        raise RPCError("injected: Temporal unavailable", RPCStatusCode.UNAVAILABLE, b"")

    key = f"orphan-{uuid.uuid4()}"
    headers = {**minter.headers(*OFFICE), "Idempotency-Key": key}
    body = new_referral()
    request_id = new_request_id("orphan")
    with monkeypatch.context() as patch:
        patch.setattr(api_routes, "start_referral", temporal_gone)
        resp = await api.post(
            "/api/v1/referrals", json=body, headers={**headers, "X-Request-ID": request_id}
        )
    assert_problem(resp, 503)

    # stored with its audit entry and its start intent, though no workflow runs yet
    entries = _entries_of(engine, request_id)
    assert [(e.action, e.outcome) for e in entries] == [("referral.create", "success")]
    with Session(engine) as session:
        pending = session.exec(
            select(WorkflowStart)
            .join(Referral, col(Referral.id) == col(WorkflowStart.referral_id))
            .where(col(Referral.created_at) >= entries[0].recorded_at - timedelta(seconds=5))
            .where(WorkflowStart.started_at == None)  # noqa: E711
        ).all()
    # this create's intent: the one of the referral its audit entry names (other tests'
    # creates may still have intents pending at this moment)
    start = [
        row
        for row in pending
        if runtime.gatekeeper.pseudonym(row.referral_id) == entries[0].referral_pseudonym
    ]
    assert len(start) == 1, pending
    referral_id = start[0].referral_id
    handle = dev_server.client.get_workflow_handle(workflow_id(referral_id))
    with pytest.raises(RPCError):
        await handle.describe()

    started = await start_pending(
        client=dev_server.client, engine=engine, settings=settings, grace=timedelta(0)
    )
    assert started >= 1
    assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
    with Session(engine) as session:
        row = session.get(WorkflowStart, referral_id)
        assert row is not None and row.started_at is not None
    # nothing left for a second round: it never starts a workflow twice
    again = await start_pending(
        client=dev_server.client, engine=engine, settings=settings, grace=timedelta(0)
    )
    assert again == 0

    retry = await api.post("/api/v1/referrals", json=body, headers=headers)
    assert retry.status_code == 200, retry.text
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["id"] == str(referral_id)
    assert retry.json()["stage"] == "awaiting_consent"


async def test_a_create_without_an_idempotency_key_is_refused_and_stores_nothing(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    with Session(engine) as session:
        before = session.exec(select(func.count()).select_from(Referral)).one()
    resp = await api.post("/api/v1/referrals", json=new_referral(), headers=minter.headers(*OFFICE))
    body = assert_problem(resp, 428)
    assert "Idempotency-Key" in body["detail"]
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Referral)).one() == before


def _attending_facts(engine: Engine, referral_id: str) -> int:
    with Session(engine) as session:
        return int(
            session.exec(
                select(func.count())
                .select_from(JusticeMessage)
                .where(JusticeMessage.referral_id == uuid.UUID(referral_id))
                .where(JusticeMessage.fact == "attending")
            ).one()
        )


async def test_a_retried_progress_report_records_one_attending_fact(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    j = Journey(api, minter)
    await j.to_in_progress()
    assert j.id is not None
    key = {"Idempotency-Key": f"progress-{uuid.uuid4()}"}
    path = f"/api/v1/referrals/{j.id}/progress"
    report = {"attendance": "attending"}
    first = await api.post(path, json=report, headers={**minter.headers(*CGG), **key})
    assert first.status_code == 200, first.text
    for _ in range(2):
        retry = await api.post(path, json=report, headers={**minter.headers(*CGG), **key})
        assert retry.status_code == 200, retry.text
        assert retry.json() == first.json()
    assert _attending_facts(engine, j.id) == 1

    # the same key for another request is refused, and changes nothing
    other = await api.post(
        path, json={"attendance": "not_attending"}, headers={**minter.headers(*CGG), **key}
    )
    assert_problem(other, 422)
    assert _attending_facts(engine, j.id) == 1

    # without a key a second report is a second report
    await j.step(CGG, "progress", report)
    assert _attending_facts(engine, j.id) == 2


async def test_a_retried_consent_is_recorded_once_and_its_answer_stored_under_a_keyed_print(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    j = Journey(api, minter)
    await j.create()
    assert j.id is not None
    key = f"consent-{uuid.uuid4()}"
    headers = {**minter.headers(*OFFICE), "Idempotency-Key": key}
    path = f"/api/v1/referrals/{j.id}/consent"
    body = consent_body()
    answers = [await api.post(path, json=body, headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200], answers[-1].text
    with Session(engine) as session:
        versions = session.exec(
            select(func.count()).select_from(Consent).where(Consent.referral_id == uuid.UUID(j.id))
        ).one()
        stored = session.get(StepAnswer, (OFFICE[0], key))
    assert versions == 1
    assert stored is not None and stored.status_code == 200
    # a keyed HMAC of the body: not its plain SHA-256, nothing of the body in clear
    assert len(stored.fingerprint) == 64
    assert stored.expires_at > stored.created_at


async def _read_with_the_pool_held(
    client: httpx.AsyncClient, runtime: Runtime, path: str, headers: dict[str, str]
) -> tuple[str, httpx.Response]:
    """GET `path` while every pooled request connection is held (and there is no overflow)."""
    held = [runtime.engine.connect() for _ in range(2)]
    try:
        for conn in held:
            conn.exec_driver_sql("SELECT 1")
        request_id = new_request_id("exhausted")
        resp = await asyncio.wait_for(
            client.get(path, headers={**headers, "X-Request-ID": request_id}), timeout=30
        )
    finally:
        for conn in held:
            conn.close()
    return request_id, resp


async def test_an_exhausted_pool_answers_503_problem_json_and_records_the_failure(
    pool_and_referral: tuple[httpx.AsyncClient, Runtime, Journey],
    minter: TokenMinter,
    engine: Engine,
) -> None:
    client, runtime, j = pool_and_referral
    path = f"/api/v1/referrals/{j.id}/consents"
    request_id, resp = await _read_with_the_pool_held(
        client, runtime, path, minter.headers(*OFFICE)
    )
    assert_problem(resp, 503)
    # the audit writer has its own pool: the failed access is on the record, disclosing nothing
    entries = _entries_of(engine, request_id)
    assert [(e.action, e.outcome, e.categories) for e in entries] == [
        ("consent.list", "failed", [])
    ]
    # and the pool recovers at once
    again = await client.get(path, headers=minter.headers(*OFFICE))
    assert again.status_code == 200, again.text


async def test_the_read_of_one_referral_waits_for_the_pool_only_where_it_takes_a_thread(
    pool_and_referral: tuple[httpx.AsyncClient, Runtime, Journey],
    minter: TokenMinter,
    engine: Engine,
) -> None:
    """On the embedded database the read every party polls runs on the event loop with its
    own connection: an exhausted request pool does not stop it. On PostgreSQL it takes a
    thread and a pooled connection like every other read: 503, recorded as failed."""
    client, runtime, j = pool_and_referral
    office = minter.headers(*OFFICE)
    path = f"/api/v1/referrals/{j.id}"
    # the first read fetches the JWKS, in a thread; from then on the keys are cached
    assert (await client.get(path, headers=office)).status_code == 200
    request_id, resp = await _read_with_the_pool_held(client, runtime, path, office)
    entries = _entries_of(engine, request_id)
    if runtime.settings.database_url.startswith("sqlite"):
        assert runtime.loop_engine is not None
        assert resp.status_code == 200, resp.text
        assert resp.json()["id"] == str(j.id)
        assert [(e.action, e.decision, e.outcome) for e in entries] == [
            ("referral.read", "permit", "success")
        ]
        assert entries[0].categories
    else:
        assert runtime.loop_engine is None
        assert_problem(resp, 503)
        assert [(e.action, e.outcome, e.categories) for e in entries] == [
            ("referral.read", "failed", [])
        ]
    again = await client.get(path, headers=office)
    assert again.status_code == 200, again.text


async def test_a_create_that_dies_after_starting_its_workflow_leaves_one_run(
    api: httpx.AsyncClient,
    minter: TokenMinter,
    engine: Engine,
    settings: Settings,
    dev_server: WorkflowEnvironment,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_start = api_routes.start_referral
    started: list[uuid.UUID] = []

    async def start_then_die(**kwargs: Any) -> None:
        # the workflow starts, then the process dies before it marks the intent done
        await dev_server.client.start_workflow(
            "ReferralWorkflow",
            kwargs["inp"],
            id=workflow_id(kwargs["inp"].referral_id),
            task_queue=kwargs["task_queue"],
        )
        started.append(kwargs["inp"].referral_id)
        raise RPCError("injected: crash after start", RPCStatusCode.UNAVAILABLE, b"")

    headers = {**minter.headers(*OFFICE), "Idempotency-Key": f"crash-{uuid.uuid4()}"}
    with monkeypatch.context() as patch:
        patch.setattr(api_routes, "start_referral", start_then_die)
        assert_problem(
            await api.post("/api/v1/referrals", json=new_referral(), headers=headers), 503
        )
    (referral_id,) = started
    handle = dev_server.client.get_workflow_handle(workflow_id(referral_id))
    first_run = (await handle.describe()).run_id

    assert (
        await start_pending(
            client=dev_server.client, engine=engine, settings=settings, grace=timedelta(0)
        )
        >= 1
    )
    with Session(engine) as session:
        row = session.get(WorkflowStart, referral_id)
        assert row is not None and row.started_at is not None
    # the reconciler found it running and started nothing: still the first and only run
    assert (await handle.describe()).run_id == first_run
    assert real_start is api_routes.start_referral


async def test_a_step_whose_first_try_died_after_taking_effect_is_finished_by_its_retry(
    api: httpx.AsyncClient, minter: TokenMinter, engine: Engine
) -> None:
    """The first accept reached the workflow and took effect, then its process died before
    storing the answer (its claim is left unanswered and goes stale). The retry with the same
    key takes over: it must answer the accept as done, not decide it again on the state the
    first try made (an accepted offer cannot be accepted: that was a 403)."""
    j = Journey(api, minter)
    await j.create()
    await j.step(OFFICE, "consent", consent_body())
    await j.wait_stage("offered")
    headers = {**minter.headers(*CGG), "Idempotency-Key": f"accept-{uuid.uuid4()}"}
    path = f"/api/v1/referrals/{j.id}/accept"
    first = await api.post(path, headers=headers)
    assert first.status_code == 200, first.text
    # as if the first try had died after the workflow took the update, before answering
    with Session(engine) as session:
        row = session.exec(
            select(StepAnswer).where(StepAnswer.referral_id == uuid.UUID(str(j.id)))
        ).one()
        row.status_code = None
        row.created_at = row.created_at - timedelta(seconds=60)
        session.add(row)
        session.commit()
    retry = await api.post(path, headers=headers)
    assert retry.status_code == 200, retry.text
    assert retry.json()["stage"] == "accepted"
    with Session(engine) as session:
        facts = session.exec(
            select(JusticeMessage.fact).where(JusticeMessage.referral_id == uuid.UUID(str(j.id)))
        ).all()
        answered = session.exec(
            select(StepAnswer.status_code).where(StepAnswer.referral_id == uuid.UUID(str(j.id)))
        ).one()
    assert list(facts).count("registered") == 1
    assert answered == 200
