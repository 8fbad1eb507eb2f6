"""Who is using the UI: the web login's session (api/web_auth.py), its CSRF token, and the
language; plus the rendering of pages with their security headers.

Every page needs a valid session; without one the browser is sent to the login, which
comes back to the page. Every POST must carry the session's CSRF token (a synchroniser
token set at login, compared in constant time) and, when the browser sends one, an
`Origin` equal to the UI's own.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from api.deps import get_context
from api.web.i18n import LANGUAGE_COOKIE, LANGUAGE_NAMES, LANGUAGES, Translator, negotiate
from api.web.labels import N_, label
from api.web_auth import session_principal
from services.access import RequestContext
from services.principal import Principal, Role, Sector
from services.settings import Settings

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
CSRF_FIELD = "csrf_token"

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    extensions=["jinja2.ext.i18n"],
    trim_blocks=True,
    lstrip_blocks=True,
)


def content_security_policy() -> str:
    """No inline script or style anywhere; forms post only to the UI itself."""
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "connect-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


SECURITY_HEADERS = {
    "Content-Security-Policy": content_security_policy(),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class LoginRequired(Exception):
    """No valid session: go to the login, then back to `next_path`."""

    def __init__(self, next_path: str) -> None:
        super().__init__("login required")
        self.next_path = next_path


class CsrfRefused(Exception):
    """A form without the session's token, or from another origin."""


def language_of(request: Request) -> str:
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return str(chosen)
    return negotiate(request.headers.get("accept-language"))


def _here(request: Request) -> str:
    """The page to come back to (after a language switch or a login)."""
    if request.method != "GET":
        return back_from(request.url.path)
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def back_from(path: str) -> str:
    """The page a form's path belongs to: the referral, the new-referral form, or home."""
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[:2] == ["ui", "referrals"] and parts[2] != "new":
        return f"/ui/referrals/{parts[2]}"
    if parts == ["ui", "referrals"]:
        return "/ui/referrals/new"
    if parts[:2] == ["ui", "audit"]:
        return "/ui/audit"
    return "/ui/"


@dataclass
class Web:
    """One UI request: who asks, in which language, with which CSRF token."""

    request: Request
    principal: Principal
    ctx: RequestContext
    csrf: str
    lang: str
    _: Translator = field(init=False)

    def __post_init__(self) -> None:
        self._ = Translator(self.lang)

    @property
    def areas(self) -> list[str]:
        """The UI areas the user's roles open (the server still decides every access)."""
        p = self.principal
        out = []
        if p.sector is Sector.JUSTICE and p.has_any(Role.PROSECUTOR, Role.JUSTICE_ASSISTANT):
            out.append("justice")
        if p.sector in (Sector.HEALTH, Sector.WELFARE) and p.has_any(
            Role.INTAKE_COORDINATOR, Role.CARE_WORKER
        ):
            out.append("care")
        if p.has_any(Role.AUDITOR):
            out.append("audit")
        if p.sector is Sector.PLATFORM and p.has_any(Role.ADMIN):
            out.append("platform")
        return out

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return render(self.request, template, status, web=self, **values)


def render(
    request: Request, template: str, status: int = 200, *, web: Web | None = None, **values: Any
) -> HTMLResponse:
    lang = web.lang if web is not None else language_of(request)
    translate = web._ if web is not None else Translator(lang)
    html = _env.get_template(template).render(
        _=translate,
        label=label,
        lang=lang,
        languages=LANGUAGE_NAMES,
        here=_here(request),
        web=web,
        csrf_field=CSRF_FIELD,
        when=when,
        time_left=time_left,
        **values,
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def when(value: Any) -> str:
    """A moment as `YYYY-MM-DD HH:MM UTC` (ISO strings or datetimes); empty for none."""
    if value is None or value == "":
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime):
        return str(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def time_left(value: Any) -> tuple[int, int] | None:
    """(hours, minutes) until a moment, (0, 0) once passed, None for none."""
    if not value:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    seconds = max(0, int((moment - datetime.now(UTC)).total_seconds()))
    return seconds // 3600, (seconds % 3600) // 60


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def _check_csrf(request: Request, expected: str, settings: Settings) -> None:
    # The synchroniser token is the defence; the origin check is the second one. Browsers
    # send Origin on form POSTs; where it is missing, the Referer (same-origin policy on
    # our pages) must not name another site either.
    own = _origin_of(settings.api_base_url)
    origin = request.headers.get("origin")
    if origin is not None:
        if origin != own:
            raise CsrfRefused
    else:
        referer = request.headers.get("referer")
        if referer is not None and _origin_of(referer) != own:
            raise CsrfRefused
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    if not expected or not isinstance(sent, str):
        raise CsrfRefused
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused


async def get_web(request: Request) -> Web:
    """The UI session of a request; raises LoginRequired or CsrfRefused."""
    next_path = _here(request)
    found = await session_principal(request)
    if found is None:
        raise LoginRequired(next_path)
    principal, session = found
    csrf = str(session.get("csrf", ""))
    if request.method not in ("GET", "HEAD"):
        await _check_csrf(request, csrf, request.app.state.settings)
    return Web(
        request=request,
        principal=principal,
        ctx=get_context(request),
        csrf=csrf,
        lang=language_of(request),
    )


WebDep = Annotated[Web, Depends(get_web)]


async def login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return redirect("/login?next=" + quote(exc.next_path, safe="/"))


async def login_refused(request: Request, exc: Exception) -> Response:
    return render(
        request,
        "error.html",
        403,
        title=N_("You may not do this"),
        message=N_(
            "You are logged in, but your account has no place in this application. "
            "Ask your administrator for access."
        ),
        detail=None,
    )


async def csrf_refused(request: Request, exc: Exception) -> Response:
    return render(
        request,
        "error.html",
        403,
        title=N_("The form has expired"),
        message=N_("Please open the page again and send the form once more."),
        detail=None,
    )
