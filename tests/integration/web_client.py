"""Drive the role UIs over HTTP without a browser: a web session stored by the app itself
(as the web login would store it) around a token of the test JWKS, and form posts with the
page's CSRF token. The browser tests (tests/integration/browser) do the same with
Chromium and real Keycloak logins."""

from __future__ import annotations

import re
import secrets
import time
from html import unescape
from typing import Any

import httpx
from fastapi import FastAPI

from api.web_auth import SESSION_COOKIE
from tests.tokens import TokenMinter

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class WebUser:
    """One logged-in UI user (an organisation and a role)."""

    def __init__(
        self,
        app: FastAPI,
        minter: TokenMinter,
        party: tuple[str, str],
        *,
        language: str | None = "en",
    ) -> None:
        self.csrf = secrets.token_urlsafe(32)
        session = {
            "access_token": minter.mint(*party),
            "refresh_token": "",
            "id_token": "",
            "expires_at": time.time() + 600,
            "csrf": self.csrf,
        }
        cookie = app.state.sessions.create(session, 600)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            cookies={SESSION_COOKIE: cookie},
            # English pages unless a test asks otherwise (the tests look for English words)
            headers={"Accept-Language": language} if language else None,
        )

    async def __aenter__(self) -> WebUser:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.aclose()

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.get(path, **kwargs)

    async def page(self, path: str, **kwargs: Any) -> str:
        """A page that must answer 200 with HTML; its text."""
        resp = await self.client.get(path, **kwargs)
        assert resp.status_code == 200, (path, resp.status_code, main_of(resp.text)[:1500])
        assert resp.headers["content-type"].startswith("text/html")
        return resp.text

    async def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: str | None = None
    ) -> httpx.Response:
        """Send a form as the browser would, with the session's CSRF token unless given."""
        form = dict(data or {})
        form.setdefault("csrf_token", self.csrf if csrf is None else csrf)
        return await self.client.post(path, data=form)

    async def submit(self, path: str, data: dict[str, Any] | None = None) -> str:
        """Post a form that must succeed (303 to a page); returns where it leads."""
        resp = await self.post(path, data)
        assert resp.status_code == 303, (path, resp.status_code, main_of(resp.text)[:1500])
        return str(resp.headers["location"])


def csrf_tokens(html: str) -> set[str]:
    return {unescape(m) for m in _CSRF.findall(html)}


def main_of(html: str) -> str:
    """The page's <main> (where errors are), or the whole text."""
    start = html.find("<main")
    return html[start:] if start >= 0 else html
