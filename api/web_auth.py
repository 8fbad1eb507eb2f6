"""Web login: OIDC authorization code with PKCE against Keycloak (client `referral-web`),
and a sealed session cookie (HttpOnly, Secure, SameSite) that the role UIs build on.

The cookie holds only a random secret; the session itself (the user's tokens and the CSRF
token of the UI's forms) is a `web_session` row keyed by the secret's SHA-256 and sealed
with AES-GCM under a key derived from the key ring. (Tokens in the cookie outgrew the
4 KiB a browser stores.) The access token is refreshed with the refresh token when it
expires, until Keycloak ends the session. On the JSON API, cookie sessions are accepted for
safe (read) requests only: state-changing API requests need a bearer token. The UI under
`/ui` (api/web) reads the same cookie; its forms carry the session's CSRF token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from sqlalchemy import Engine, delete
from sqlmodel import Session, col

from api.auth import TokenValidator
from api.deps import get_context
from services.audit import events as audit_events
from services.errors import Unauthenticated, Unavailable
from services.models import WebSession
from services.principal import Principal
from services.runtime import Runtime
from services.settings import Settings

SESSION_COOKIE = "referral_session"
LOGIN_COOKIE = "referral_login"
WEB_CLIENT_ID = "referral-web"

# The browser's login flow (redirects and cookies) is not part of the JSON API's contract.
router = APIRouter(tags=["web login"], include_in_schema=False)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CookieSealer:
    """Seals small JSON values into cookies and session rows (AES-256-GCM, the name as
    associated data) under the key ring's web-session keys: the current one seals, the
    previous one still opens, so the key rotates without logging everyone out."""

    def __init__(self, secrets_: Sequence[bytes]) -> None:
        if not secrets_:
            raise ValueError("a cookie sealer needs at least one key")
        self._aeads = [
            AESGCM(
                HKDF(
                    algorithm=hashes.SHA256(),
                    length=32,
                    salt=None,
                    info=b"referral web session cookie",
                ).derive(secret)
            )
            for secret in secrets_
        ]

    def seal(self, name: str, value: dict[str, Any]) -> str:
        nonce = os.urandom(12)
        data = self._aeads[0].encrypt(nonce, json.dumps(value).encode(), name.encode())
        return _b64(nonce + data)

    def _decrypt(self, raw: bytes, name: str) -> bytes:
        for aead in self._aeads:
            try:
                return aead.decrypt(raw[:12], raw[12:], name.encode())
            except InvalidTag:
                continue
        raise InvalidTag

    def open(self, name: str, sealed: str) -> dict[str, Any]:
        try:
            raw = _unb64(sealed)
            value = json.loads(self._decrypt(raw, name))
        except (InvalidTag, ValueError, TypeError):
            raise Unauthenticated("the session is not valid") from None
        if not isinstance(value, dict):
            raise Unauthenticated("the session is not valid")
        return value


def _endpoints(settings: Settings) -> dict[str, str]:
    base = settings.jwt_issuer.rstrip("/") + "/protocol/openid-connect"
    return {"auth": f"{base}/auth", "token": f"{base}/token", "logout": f"{base}/logout"}


def _redirect_uri(settings: Settings) -> str:
    return settings.api_base_url.rstrip("/") + "/auth/callback"


def safe_next(target: str | None) -> str:
    """A local path to go on to, or /ui/: never an open redirect (`//x`, `/\\x` and control
    characters are what browsers may read as another site)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)
        or len(target) > 2000
    ):
        return "/ui/"
    return target


def _cookie_args(settings: Settings, max_age: int, path: str = "/") -> dict[str, Any]:
    return {
        "max_age": max_age,
        "httponly": True,
        "secure": settings.session_cookie_secure,
        "samesite": "lax",
        "path": path,
    }


def _sealer(request: Request) -> CookieSealer:
    sealer: CookieSealer = request.app.state.cookie_sealer
    return sealer


@router.get("/login")
async def login(request: Request, next: str | None = None) -> RedirectResponse:
    """Start the OIDC authorization code flow with PKCE (S256)."""
    settings: Settings = request.app.state.settings
    verifier = secrets.token_urlsafe(64)
    state = secrets.token_urlsafe(24)
    nonce = secrets.token_urlsafe(24)
    challenge = _b64(hashlib.sha256(verifier.encode()).digest())
    query = urlencode(
        {
            "response_type": "code",
            "client_id": WEB_CLIENT_ID,
            "redirect_uri": _redirect_uri(settings),
            "scope": "openid basic organization",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    response = RedirectResponse(f"{_endpoints(settings)['auth']}?{query}", status_code=302)
    pending = {"state": state, "verifier": verifier, "next": safe_next(next), "at": time.time()}
    response.set_cookie(
        LOGIN_COOKIE,
        _sealer(request).seal(LOGIN_COOKIE, pending),
        **_cookie_args(settings, 600, path="/auth"),
    )
    return response


class LoginRefused(Exception):
    """The identity provider logged the person in, but their token gives them no place in
    this application; the UI answers with a page (api/web/session.py)."""


@router.get("/auth/callback")
async def callback(
    request: Request, code: str | None = None, state: str | None = None
) -> RedirectResponse:
    """Finish the login: check state, exchange the code with the PKCE verifier, set the session."""
    settings: Settings = request.app.state.settings
    sealed = request.cookies.get(LOGIN_COOKIE)
    if not sealed or not code or not state:
        raise Unauthenticated("no login is in progress")
    pending = _sealer(request).open(LOGIN_COOKIE, sealed)
    if not secrets.compare_digest(str(pending.get("state")), state):
        raise Unauthenticated("the login state does not match")
    if time.time() - float(pending.get("at", 0)) > 600:
        raise Unauthenticated("the login took too long")
    async with httpx.AsyncClient(timeout=15) as client:
        resp = await client.post(
            _endpoints(settings)["token"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": _redirect_uri(settings),
                "client_id": WEB_CLIENT_ID,
                "code_verifier": pending["verifier"],
            },
        )
    if resp.status_code != 200:
        raise Unauthenticated("the identity provider refused the login")
    tokens = resp.json()
    validator: TokenValidator = request.app.state.tokens
    runtime: Runtime = request.app.state.runtime
    try:
        principal = await run_in_threadpool(validator.validate, tokens["access_token"])
    except Unauthenticated:
        # the identity provider knows the person, this application does not (e.g. no
        # organisation): recorded as a refused authentication, then a page that says so,
        # not the JSON API's 401
        await run_in_threadpool(
            audit_events.record_failed_authentication,
            runtime.gatekeeper,
            channel="web",
            ctx=get_context(request),
        )
        raise LoginRefused from None
    await run_in_threadpool(
        audit_events.record_login, runtime.gatekeeper, principal=principal, ctx=get_context(request)
    )
    session = _session_from(tokens)
    # the synchroniser token of the UI's forms (api/web/session.py), one per session
    session["csrf"] = secrets.token_urlsafe(32)
    store: SessionStore = request.app.state.sessions
    secret = await run_in_threadpool(store.create, session, settings.session_max_age_seconds)
    response = RedirectResponse(str(pending["next"]), status_code=303)
    response.delete_cookie(LOGIN_COOKIE, path="/auth")
    response.set_cookie(
        SESSION_COOKIE, secret, **_cookie_args(settings, settings.session_max_age_seconds)
    )
    return response


def _session_from(tokens: dict[str, Any]) -> dict[str, Any]:
    return {
        "access_token": tokens["access_token"],
        "refresh_token": tokens.get("refresh_token", ""),
        "id_token": tokens.get("id_token", ""),
        "expires_at": time.time() + int(tokens.get("expires_in", 300)),
    }


@router.get("/logout")
async def logout(request: Request) -> RedirectResponse:
    """End the session here and at Keycloak (recorded: who logged out, if the session still
    named someone)."""
    settings: Settings = request.app.state.settings
    id_token = ""
    principal: Principal | None = None
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        store: SessionStore = request.app.state.sessions
        session = await run_in_threadpool(store.load, secret)
        if session is not None:
            id_token = str(session.get("id_token", ""))
            principal = await _principal_of(request, session)
        await run_in_threadpool(store.delete, secret)
    runtime: Runtime = request.app.state.runtime
    await run_in_threadpool(
        audit_events.record_logout,
        runtime.gatekeeper,
        principal=principal,
        ctx=get_context(request),
    )
    params = {"client_id": WEB_CLIENT_ID, "post_logout_redirect_uri": settings.api_base_url + "/"}
    if id_token:
        params["id_token_hint"] = id_token
    response = RedirectResponse(f"{_endpoints(settings)['logout']}?{urlencode(params)}", 302)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def _principal_of(request: Request, session: dict[str, Any]) -> Principal | None:
    """Who a stored session names, if its access token still verifies (no refresh)."""
    validator: TokenValidator = request.app.state.tokens
    try:
        return await run_in_threadpool(validator.validate, str(session.get("access_token", "")))
    except (Unauthenticated, Unavailable):
        return None  # the logout goes on (recorded without a name) even while the IdP is down


async def current_session(request: Request) -> dict[str, Any] | None:
    """The request's web session with a fresh access token, or None (log in again).

    An expired access token is refreshed with the refresh token (Keycloak may refuse: the
    session ended there, or idled out); a session that cannot be refreshed is deleted.
    """
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret or len(secret) > 128:
        return None
    store: SessionStore = request.app.state.sessions
    session = await run_in_threadpool(store.load, secret)
    if session is None:
        return None
    if float(session.get("expires_at", 0)) > time.time() + 10:
        return session
    refreshed = await _refresh(request.app.state.settings, str(session.get("refresh_token", "")))
    if refreshed is None:
        await run_in_threadpool(store.delete, secret)
        return None
    # Keycloak may leave out a new refresh or id token: the old ones stay
    session = {**session, **{name: value for name, value in refreshed.items() if value}}
    await run_in_threadpool(store.save, secret, session)
    return session


async def _refresh(settings: Settings, refresh_token: str) -> dict[str, Any] | None:
    if not refresh_token:
        return None
    try:
        async with httpx.AsyncClient(timeout=15) as client:
            resp = await client.post(
                _endpoints(settings)["token"],
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": refresh_token,
                    "client_id": WEB_CLIENT_ID,
                },
            )
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    return _session_from(resp.json())


async def principal_from_session(request: Request) -> Principal | None:
    """The principal of a valid web session on a safe request, else None."""
    if not request.cookies.get(SESSION_COOKIE):
        return None
    if request.method not in ("GET", "HEAD"):
        raise Unauthenticated("state-changing requests need a bearer token")
    found = await session_principal(request)
    if found is None:
        raise Unauthenticated("the session has expired: log in again")
    return found[0]


async def session_principal(request: Request) -> tuple[Principal, dict[str, Any]] | None:
    """The principal of the request's web session and the session, or None (log in again)."""
    session = await current_session(request)
    if session is None:
        return None
    validator: TokenValidator = request.app.state.tokens
    try:
        principal = await run_in_threadpool(validator.validate, str(session["access_token"]))
    except (Unauthenticated, KeyError):
        return None
    return principal, session


class SessionStore:
    """Web sessions in the database, sealed; the browser holds only the random secret."""

    def __init__(self, engine: Engine, sealer: CookieSealer) -> None:
        self._engine = engine
        self._sealer = sealer

    @staticmethod
    def _key(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    @classmethod
    def _aad(cls, secret: str) -> str:
        # a sealed session opens only under its own row: rows cannot be swapped
        return f"web_session:{cls._key(secret)}"

    def create(self, session: dict[str, Any], max_age_seconds: int) -> str:
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with Session(self._engine) as db:
            # expired sessions go as new ones come
            db.exec(delete(WebSession).where(col(WebSession.expires_at) < now))
            db.add(
                WebSession(
                    id=self._key(secret),
                    sealed=self._sealer.seal(self._aad(secret), session),
                    created_at=now,
                    expires_at=now + timedelta(seconds=max_age_seconds),
                )
            )
            db.commit()
        return secret

    def load(self, secret: str) -> dict[str, Any] | None:
        with Session(self._engine) as db:
            row = db.get(WebSession, self._key(secret))
        if row is None or row.expires_at < datetime.now(UTC):
            return None
        try:
            return self._sealer.open(self._aad(secret), row.sealed)
        except Unauthenticated:
            return None

    def save(self, secret: str, session: dict[str, Any]) -> None:
        with Session(self._engine) as db:
            row = db.get(WebSession, self._key(secret))
            if row is not None:
                row.sealed = self._sealer.seal(self._aad(secret), session)
                db.add(row)
                db.commit()

    def delete(self, secret: str) -> None:
        with Session(self._engine) as db:
            row = db.get(WebSession, self._key(secret))
            if row is not None:
                db.delete(row)
                db.commit()
