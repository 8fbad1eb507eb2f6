"""Web login against the real Keycloak: authorization code with PKCE, a sealed session
cookie with secure flags, read-only cookie sessions, logout."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.main import create_app
from api.web_auth import SESSION_COOKIE
from services.audit.models import AuditEntry
from services.runtime import Runtime
from services.settings import Settings
from tests.integration.journey import new_referral

pytestmark = [pytest.mark.keycloak, pytest.mark.integration]


@pytest.fixture
def web_app(
    keycloak: Any,
    settings: Settings,
    runtime: Runtime,
    dev_server: WorkflowEnvironment,
    worker: Worker,
) -> FastAPI:
    web_settings = settings.model_copy(
        update={
            "jwks_url": keycloak.jwks_url,
            "jwt_issuer": keycloak.issuer,
            "api_base_url": "http://127.0.0.1:8000",  # the realm's registered redirect URIs
        }
    )
    return create_app(web_settings, runtime=runtime, temporal=dev_server.client)


@pytest.fixture
async def web(web_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=web_app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        yield client


async def _login(web: httpx.AsyncClient, username: str) -> httpx.Response:
    start = await web.get("/login", params={"next": "/api/v1/referrals"})
    assert start.status_code == 302
    login_cookie = start.headers["set-cookie"]
    assert "HttpOnly" in login_cookie and "Secure" in login_cookie
    assert "samesite=lax" in login_cookie.lower()
    authorize = urlparse(start.headers["location"])
    params = parse_qs(authorize.query)
    assert params["code_challenge_method"] == ["S256"] and params["client_id"] == ["referral-web"]

    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        page = browser.get(start.headers["location"])
        assert page.status_code == 200, page.text[:500]
        # Keycloak marks its cookies Secure; over plain-http loopback a browser on
        # 127.0.0.1 still sends them, httpx does not: forward them by hand. With
        # organisations enabled the login is identity-first: username, then password.
        cookies: dict[str, str] = {}
        done = page
        for _ in range(3):
            for c in done.headers.get_list("set-cookie"):
                name, _, value = c.split(";", 1)[0].partition("=")
                cookies[name] = value
            if done.status_code == 302:
                break
            form = re.search(r'<form[^>]*action="([^"]+)"', done.text)
            assert form is not None, done.text[:300]
            done = browser.post(
                unescape(form[1]),
                data={"username": username, "password": "demo"},
                headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
            )
        assert done.status_code == 302, done.status_code
    back = urlparse(done.headers["location"])
    assert back.path == "/auth/callback"
    return await web.get(f"/auth/callback?{back.query}")


def _entries_after(engine: Engine, index: int) -> list[AuditEntry]:
    with Session(engine) as s:
        return list(
            s.exec(
                select(AuditEntry).where(AuditEntry.index > index).order_by(col(AuditEntry.index))
            ).all()
        )


def _last_index(engine: Engine) -> int:
    with Session(engine) as s:
        last = s.exec(select(func.max(AuditEntry.index))).one()
    return -1 if last is None else last


async def test_web_login_with_pkce_gives_a_secure_session(
    web: httpx.AsyncClient, web_app: FastAPI, engine: Engine
) -> None:
    before = _last_index(engine)
    finished = await _login(web, "demo-prosecutor-antwerpen")
    assert finished.status_code == 303, finished.text
    # the login is recorded (IHE BALP login): who, from where, through which node
    (login,) = [e for e in _entries_after(engine, before) if e.event_type == "login"]
    assert (login.action, login.outcome, login.actor_organisation) == (
        "session.login",
        "success",
        "parket-antwerpen",
    )
    assert login.actor_role == "prosecutor" and login.purpose_of_use == "HSYSADMIN"
    assert login.client_address == "127.0.0.1" and login.source_node
    assert finished.headers["location"] == "/api/v1/referrals"
    session_cookie = [c for c in finished.headers.get_list("set-cookie") if SESSION_COOKIE in c][0]
    assert "HttpOnly" in session_cookie and "Secure" in session_cookie
    assert "samesite=lax" in session_cookie.lower()
    assert "eyJ" not in session_cookie  # the token is sealed, not readable by the browser

    listed = await web.get("/api/v1/referrals")
    assert listed.status_code == 200, listed.text

    # a session cookie alone may not change anything (no CSRF-able writes)
    created = await web.post(
        "/api/v1/referrals",
        json=new_referral(),
        headers={"Idempotency-Key": f"web-{uuid.uuid4()}"},
    )
    assert created.status_code == 401

    # a tampered cookie is refused
    value = web.cookies[SESSION_COOKIE]
    jar = dict(web.cookies)
    web.cookies.clear()
    tampered = {"Cookie": f"{SESSION_COOKIE}={value[:-6]}AAAAAA"}
    assert (await web.get("/api/v1/referrals", headers=tampered)).status_code == 401
    for name, val in jar.items():
        web.cookies.set(name, val)

    # the cookie is a random secret: no token in it, and small enough for any browser
    assert len(value) < 100

    # an expired access token is refreshed with the refresh token, behind the user's back
    store = web_app.state.sessions
    session = store.load(value)
    assert session is not None and session["refresh_token"]
    old_token = session["access_token"]
    store.save(value, {**session, "expires_at": 0})
    assert (await web.get("/api/v1/referrals")).status_code == 200
    refreshed = store.load(value)
    assert refreshed is not None and refreshed["access_token"] != old_token
    assert refreshed["expires_at"] > 0 and refreshed["csrf"] == session["csrf"]
    assert refreshed["id_token"] and refreshed["refresh_token"]  # logout still has its hint

    # a refresh token Keycloak refuses ends the session here too
    store.save(value, {**refreshed, "expires_at": 0, "refresh_token": "not-a-token"})
    assert (await web.get("/api/v1/referrals")).status_code == 401
    assert store.load(value) is None

    web.cookies.clear()
    assert (await _login(web, "demo-prosecutor-antwerpen")).status_code == 303
    value = web.cookies[SESSION_COOKIE]
    assert store.load(value) is not None
    before = _last_index(engine)
    out = await web.get("/logout")
    (logout,) = [e for e in _entries_after(engine, before) if e.action.startswith("session.")]
    assert (logout.event_type, logout.action, logout.outcome) == (
        "logout",
        "session.logout",
        "success",
    )
    assert logout.actor_organisation == "parket-antwerpen" and logout.actor_role == "prosecutor"
    assert out.status_code == 302 and "/protocol/openid-connect/logout" in out.headers["location"]
    assert "id_token_hint=" in out.headers["location"]
    assert any(SESSION_COOKIE in c and "Max-Age=0" in c for c in out.headers.get_list("set-cookie"))
    # logging out ends the session on the server: the old cookie is worth nothing
    assert store.load(value) is None
    stolen = {"Cookie": f"{SESSION_COOKIE}={value}"}
    assert (await web.get("/api/v1/referrals", headers=stolen)).status_code == 401


async def test_callback_refuses_a_forged_state(web: httpx.AsyncClient, engine: Engine) -> None:
    start = await web.get("/login")
    assert start.status_code == 302
    before = _last_index(engine)
    resp = await web.get("/auth/callback?code=abc&state=forged")
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"
    (failed,) = [e for e in _entries_after(engine, before) if e.actor_subject == "unauthenticated"]
    assert (failed.event_type, failed.action, failed.outcome) == (
        "login",
        "authentication.web",
        "refused",
    )


async def test_login_only_redirects_to_local_paths(web: httpx.AsyncClient) -> None:
    start = await web.get("/login", params={"next": "https://evil.example/"})
    assert start.status_code == 302


async def test_the_administrators_web_login_lands_on_the_policies(web: httpx.AsyncClient) -> None:
    """demo-admin (a platform operator) gets a session and a page, not a JSON 401."""
    done = await _login(web, "demo-admin")
    assert done.status_code == 303, done.text
    home = await web.get("/ui/")
    assert home.status_code in (302, 303) and home.headers["location"] == "/ui/audit/explain"
    page = await web.get("/ui/audit/explain")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
