"""Every answer of every route carries the security headers, whatever it is: a success, a
refusal, a problem+json error, a static file, a redirect. The walk covers the app's whole
route table, so a new route is checked the day it is added.

Answers that may carry personal data must not be cached (`no-store`), nothing may be
sniffed into another type, nothing framed; no answer names the server software; CORS
(for the Temporal UI's codec calls) opens the codec endpoint only.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from temporalio.worker import Worker

from api.cli import api_server
from api.middleware import SecurityHeaders
from services.settings import Settings
from tests.integration.audit_probe import walk_routes
from tests.integration.journey import OFFICE
from tests.tokens import TokenMinter

pytestmark = pytest.mark.integration

STATIC_PREFIXES = ("/static/", "/docs-assets/")
SAMPLE_FILES = {
    "/static/{path}": "/static/app.css",
    "/docs-assets/{path}": "/docs-assets/swagger-ui.css",
}


@pytest.fixture
async def client(app: FastAPI, worker: Worker) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def _concrete(path: str) -> str:
    if path in SAMPLE_FILES:
        return SAMPLE_FILES[path]
    return (
        path.replace("{referral_id}", str(uuid.uuid4()))
        .replace("{index}", "0")
        .replace("{subject}", "nobody")
        .replace("{path}", "x")
    )


def _header_problems(where: str, resp: httpx.Response) -> list[str]:
    problems = []
    headers = resp.headers
    if headers.get("x-content-type-options") != "nosniff":
        problems.append(
            f"{where}: X-Content-Type-Options is {headers.get('x-content-type-options')}"
        )
    cache = headers.get("cache-control", "")
    static = resp.request.url.path.startswith(STATIC_PREFIXES)
    if "no-store" not in cache and not (static and "no-cache" in cache):
        problems.append(f"{where}: Cache-Control is {cache!r}")
    if not headers.get("content-security-policy"):
        problems.append(f"{where}: no Content-Security-Policy")
    if "server" in headers:
        problems.append(f"{where}: names the server: {headers['server']}")
    if "access-control-allow-origin" in headers:
        problems.append(f"{where}: CORS header on a route other than the codec")
    return problems


async def test_every_route_answers_with_the_security_headers(
    app: FastAPI, client: httpx.AsyncClient, minter: TokenMinter
) -> None:
    routes = walk_routes(app)
    assert len(routes) > 40, "the route walk found too few routes: is it broken?"
    problems: list[str] = []
    for route in routes:
        url = _concrete(route.path)
        method = "GET" if route.method == "*" else route.method
        for who, headers in (("anonymous", {}), ("office", minter.headers(*OFFICE))):
            resp = await client.request(method, url, headers=headers, follow_redirects=False)
            assert resp.status_code < 500, (method, url, who, resp.status_code, resp.text[:200])
            problems += _header_problems(f"{method} {url} ({who}, {resp.status_code})", resp)
    # and answers no route produces: an unknown path, a wrong method, an oversized body
    for method, url, body in (
        ("GET", "/no/such/path", None),
        ("DELETE", "/api/v1/referrals", None),
        ("POST", "/api/v1/referrals", b"x" * (64 * 1024)),
    ):
        resp = await client.request(method, url, content=body, headers=minter.headers(*OFFICE))
        problems += _header_problems(f"{method} {url} ({resp.status_code})", resp)
    assert problems == []


async def test_cors_opens_the_codec_endpoint_only(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    preflight = {
        "Origin": settings.temporal_ui_origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    codec = await client.options("/codec/decode", headers=preflight)
    assert codec.headers.get("access-control-allow-origin") == settings.temporal_ui_origin
    for path in ("/api/v1/referrals", "/api/v1/audit/entries", "/ui/", "/codec-not"):
        resp = await client.options(path, headers=preflight)
        assert "access-control-allow-origin" not in resp.headers, path
        resp = await client.get(path, headers={"Origin": settings.temporal_ui_origin})
        assert "access-control-allow-origin" not in resp.headers, path
    foreign = await client.options(
        "/codec/decode", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert foreign.headers.get("access-control-allow-origin") is None


async def _plain(_: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def test_hsts_only_where_the_settings_ask_for_it() -> None:
    for hsts, expected in ((True, True), (False, False)):
        app = SecurityHeaders(Starlette(routes=[Route("/", _plain)]), hsts=hsts)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            resp = await c.get("/")
        assert ("strict-transport-security" in resp.headers) is expected
    assert Settings(
        environment="production",
        demo_users_enabled=False,
        jwks_url="https://idp/certs",
        database_url="postgresql://x/y",
    ).hsts_enabled
    assert not Settings(environment="development").hsts_enabled


async def test_the_api_server_sends_no_server_banner(settings: Settings) -> None:
    """`referral api` runs this server: no `server: uvicorn` header."""
    app = SecurityHeaders(Starlette(routes=[Route("/", _plain)]), hsts=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    local = settings.model_copy(update={"api_host": "127.0.0.1", "api_port": port})
    server = api_server(local, app, factory=False)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient() as c:
            resp = await c.get(f"http://127.0.0.1:{port}/")
        assert resp.status_code == 200
        assert "server" not in resp.headers
    finally:
        server.should_exit = True
        await task
