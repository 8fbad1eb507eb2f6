"""Probes shared by the bad-input and route-table tests: the audit log's tail, what the
database and the workflow hold for one referral, and problem+json shape checks."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session, col, func, select
from temporalio.client import Client

from services.audit.models import AuditEntry
from services.models import CareTeamAssignment, Consent, Referral, StatusHistory
from workflows.referral import ReferralWorkflow, workflow_id

PROBLEM = "application/problem+json"


# ---- routes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteInfo:
    """One (method, path) the app serves; method "*" for a non-HTTP route (a mount)."""

    method: str
    path: str
    name: str | None
    has_body: bool


def walk_routes(app: FastAPI) -> list[RouteInfo]:
    """Every route of the app, included routers flattened (FastAPI includes them lazily)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are copied into app.routes
        contexts: list[Any] = list(app.routes)
    else:
        contexts = list(iter_route_contexts(app.routes))
    out = []
    for route in contexts:
        path = getattr(route, "path_format", None) or getattr(route, "path", None) or ""
        methods = getattr(route, "methods", None) or {"*"}
        has_body = getattr(route, "body_field", None) is not None
        for method in sorted(set(methods) - {"HEAD"}) or ["HEAD"]:
            out.append(RouteInfo(method, path, getattr(route, "name", None), has_body))
    return sorted(out, key=lambda r: (r.path, r.method))


# ---- audit -----------------------------------------------------------------------------


def max_audit_index(engine: Engine) -> int:
    """The index of the newest audit entry (-1 when the log is empty)."""
    with Session(engine) as session:
        value = session.exec(select(func.max(col(AuditEntry.index)))).one()
    return -1 if value is None else int(value)


def audit_entries_after(
    engine: Engine, index: int, *, request_id: str | None = None
) -> list[AuditEntry]:
    """Audit entries newer than `index`, optionally of one request only, oldest first."""
    with Session(engine) as session:
        query = select(AuditEntry).where(col(AuditEntry.index) > index)
        if request_id is not None:
            query = query.where(AuditEntry.request_id == request_id)
        return list(session.exec(query.order_by(col(AuditEntry.index))).all())


def new_request_id(tag: str) -> str:
    """A request id (sent as X-Request-ID) that ties audit entries to one request."""
    return f"{tag}-{uuid.uuid4().hex}"


# ---- state ---------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """Row counts of the tables a request could change, and one referral's state."""

    referrals: int
    consents: int
    status_rows: int
    assignments: int
    version: int | None
    stage: str | None
    workflow_stage: str | None
    workflow_version: int | None


def _db_state(engine: Engine, referral_id: uuid.UUID | None) -> tuple[Any, ...]:
    with Session(engine) as session:
        referrals = session.exec(select(func.count()).select_from(Referral)).one()
        consents = session.exec(select(func.count()).select_from(Consent)).one()
        status_rows = session.exec(select(func.count()).select_from(StatusHistory)).one()
        assignments = session.exec(select(func.count()).select_from(CareTeamAssignment)).one()
        version = stage = None
        if referral_id is not None:
            row = session.get(Referral, referral_id)
            assert row is not None, "the probed referral does not exist"
            version, stage = row.version, row.stage
    return int(referrals), int(consents), int(status_rows), int(assignments), version, stage


async def snapshot(
    engine: Engine, temporal: Client | None = None, referral_id: uuid.UUID | str | None = None
) -> State:
    """What the database (and, given a client, the referral's workflow) holds now."""
    rid = uuid.UUID(str(referral_id)) if referral_id is not None else None
    referrals, consents, status_rows, assignments, version, stage = await asyncio.to_thread(
        _db_state, engine, rid
    )
    wf_stage = wf_version = None
    if temporal is not None and rid is not None:
        handle = temporal.get_workflow_handle_for(ReferralWorkflow.run, workflow_id(rid))
        snap = await handle.query(ReferralWorkflow.status)
        wf_stage, wf_version = str(snap.stage), snap.version
    return State(
        referrals, consents, status_rows, assignments, version, stage, wf_stage, wf_version
    )


async def settled(
    engine: Engine, temporal: Client, referral_id: uuid.UUID | str, *, tries: int = 200
) -> State:
    """Wait until the database projection has caught up with the referral's workflow."""
    state = await snapshot(engine, temporal, referral_id)
    for _ in range(tries):
        if state.version == state.workflow_version:
            return state
        await asyncio.sleep(0.05)
        state = await snapshot(engine, temporal, referral_id)
    raise AssertionError(f"the projection never caught up with the workflow: {state}")


# ---- problem+json ------------------------------------------------------------------------


def assert_problem(resp: httpx.Response, status: int | tuple[int, ...]) -> dict[str, Any]:
    """An RFC 9457 answer with the expected status; returns its body."""
    statuses = (status,) if isinstance(status, int) else status
    assert resp.status_code in statuses, (resp.status_code, resp.text[:500])
    assert resp.headers.get("content-type") == PROBLEM, resp.headers.get("content-type")
    body = resp.json()
    assert isinstance(body, dict), body
    for key in ("type", "title", "status", "detail"):
        assert key in body, (key, body)
    assert isinstance(body["type"], str) and body["type"]
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str)
    assert body["status"] == resp.status_code, body
    if resp.status_code == 401:
        assert resp.headers.get("www-authenticate", "").lower().startswith("bearer"), resp.headers
    return body


def assert_no_echo(resp: httpx.Response, secrets: list[str]) -> None:
    """None of the submitted personal values comes back, in the body or the headers."""
    text = resp.text
    headers = " ".join(f"{k}: {v}" for k, v in resp.headers.items())
    for secret in secrets:
        if secret:
            assert secret not in text, f"the answer echoes a submitted value: {secret!r}"
            assert secret not in headers, f"a header echoes a submitted value: {secret!r}"
