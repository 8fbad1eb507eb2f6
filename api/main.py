"""The FastAPI application: API v1, health, problem+json errors, tracing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from sqlalchemy import text
from temporalio.client import Client

from api import docs, errors, readiness
from api.auditor import report_router
from api.auditor import router as audit_router
from api.auth import DEVELOPMENT_KEY_THUMBPRINT, TokenValidator
from api.codec import router as codec_router
from api.middleware import CodecOnlyCors, RequestLimits, SecurityHeaders, TraceContext
from api.policy_routes import router as policy_router
from api.routes import router
from api.web import audit_figures as web_audit_figures
from api.web import pages as web_pages
from api.web import session as web_session
from api.web_auth import CookieSealer, LoginRefused, SessionStore
from api.web_auth import router as web_auth_router
from services import telemetry
from services.access_process import ProcessAccessWriter
from services.errors import Unavailable
from services.runtime import Runtime
from services.settings import OtelExporter, Settings, get_settings
from workflows.client import connect

NO_TOKEN_PATHS = {
    "/healthz",
    "/readyz",
    "/docs",
    "/openapi.json",
}


def _nothing() -> None:
    """A request thread's least work (the liveness check)."""


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    temporal: Client | None = None,
) -> FastAPI:
    """The API app; tests pass their own runtime and Temporal client."""
    settings = settings or get_settings()
    tracer_provider = telemetry.configure(settings)
    runtime = runtime or Runtime.build(settings)
    telemetry.instrument_engines(settings, runtime.engine, runtime.loop_engine)
    connect_lock = asyncio.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.temporal is None:
            try:
                await ensure_temporal(app)
            except Exception:  # noqa: BLE001 - readiness reports it; routes retry
                pass
        writer = runtime.gatekeeper.writer
        if isinstance(writer, ProcessAccessWriter):
            # started now rather than by the first read; it ends when the API does
            try:
                await writer.start()
            except Unavailable:
                pass  # logged; the next read starts it again

        yield
        if isinstance(writer, ProcessAccessWriter):
            await writer.aclose()

    async def ensure_temporal(app: FastAPI) -> Client:
        async with connect_lock:
            if app.state.temporal is None:
                app.state.temporal = await connect(
                    address=settings.temporal_address,
                    namespace=settings.temporal_namespace,
                    keyring=runtime.keyring,
                    referral_keys=runtime.payload_keys,
                )
            client: Client = app.state.temporal
            return client

    app = FastAPI(
        title="Referral engine",
        version="0.1.0",
        summary="Diversion to care before prosecution: referrals across justice, health, welfare",
        lifespan=lifespan,
        docs_url=None,  # api/docs.py serves them with pinned assets, under a CSP
        redoc_url=None,
        # FastAPI's own telemetry stays off: the instrumentor below makes the request's one
        # server span, and FastAPI's would add its own request and operation spans to every
        # request (it turns itself on once a tracer provider is installed, as ours is), and
        # its logs would record rejected input values and exception messages, which may be
        # personal data, wherever a log provider sends them.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.runtime = runtime
    app.state.settings = settings
    app.state.temporal = temporal
    app.state.ensure_temporal = ensure_temporal
    app.state.tokens = TokenValidator(
        jwks_url=settings.jwks_url,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        cache_seconds=settings.jwks_cache_seconds,
        refetch_seconds=settings.jwks_refetch_seconds,
        # the development realm's fixed key is public in the repository
        refused_thumbprints=(
            frozenset({DEVELOPMENT_KEY_THUMBPRINT}) if settings.is_production else frozenset()
        ),
    )
    errors.install(app)
    docs.install(app)
    app.include_router(router)
    app.include_router(audit_router)
    app.include_router(report_router)
    app.include_router(codec_router)
    app.include_router(web_auth_router)
    app.state.cookie_sealer = CookieSealer(runtime.keyring.web_session_keys())
    app.state.sessions = SessionStore(runtime.engine, app.state.cookie_sealer)
    app.include_router(policy_router)
    # The role UIs: pages under /ui, their CSS and scripts under /static (no token needed
    # for either; every page and form requires the web login's session).
    app.include_router(web_pages.router)
    app.include_router(web_audit_figures.router)
    app.mount("/static", StaticFiles(directory=web_session.STATIC), name="static")
    app.add_exception_handler(web_session.LoginRequired, web_session.login_required)
    app.add_exception_handler(web_session.CsrfRefused, web_session.csrf_refused)
    app.add_exception_handler(LoginRefused, web_session.login_refused)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=303)

    @app.get("/healthz", tags=["health"], response_model=None)
    async def healthz() -> dict[str, str] | JSONResponse:
        """Liveness: the event loop answers and a request thread runs within the bound.

        A process whose request threads are all stuck (waiting on a database that will not
        answer, say) still accepts connections but serves nothing: it fails this check, and
        `make run` restarts it. Nothing here touches the database or another service.
        """
        try:
            await asyncio.wait_for(
                run_in_threadpool(_nothing), timeout=settings.liveness_timeout_seconds
            )
        except TimeoutError:
            return errors.problem(503, "Not live", "no request thread is free to serve", "not-live")
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses=errors.problem_responses(503))
    async def readyz() -> JSONResponse:
        """Readiness: the database, Temporal and the identity provider (JWKS) answer."""
        checks: dict[str, str] = {}
        bound = settings.liveness_timeout_seconds

        def database() -> None:
            with runtime.engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await asyncio.wait_for(run_in_threadpool(database), timeout=bound)
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["database"] = "unavailable"
            readiness.logger.warning("readiness: database unavailable (%s)", type(exc).__name__)

        async def temporal() -> bool:
            return await readiness.temporal_serving(await ensure_temporal(app))

        try:
            serving = await asyncio.wait_for(temporal(), timeout=bound)
        except Exception as exc:  # noqa: BLE001
            serving = False
            readiness.logger.warning("readiness: temporal unavailable (%s)", type(exc).__name__)
        checks["temporal"] = "ok" if serving else "unavailable"
        tokens: TokenValidator = app.state.tokens
        try:
            reachable = await asyncio.wait_for(
                run_in_threadpool(tokens.identity_provider_reachable), timeout=bound
            )
        except TimeoutError:
            reachable = False
        checks["identity_provider"] = "ok" if reachable else "unavailable"
        if not reachable:
            readiness.logger.warning("readiness: identity provider unavailable")
        ready = all(v == "ok" for v in checks.values())
        body = {"status": "ready" if ready else "not_ready", "checks": checks}
        if ready:
            return JSONResponse(body)
        down = ", ".join(name for name, state in checks.items() if state != "ok")
        return JSONResponse(
            {
                "type": "urn:referral:problem:not-ready",
                "title": "Not ready",
                "status": 503,
                "detail": f"unavailable: {down}",
                # not spread over `status`: a problem's status is the HTTP status (RFC 9457)
                "readiness": body["status"],
                "checks": checks,
            },
            status_code=503,
            media_type=errors.PROBLEM,
            headers={"Retry-After": str(errors.RETRY_AFTER_SECONDS)},
        )

    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes)
    # The Temporal UI calls the codec endpoint from the browser, with the user's token; no
    # other route is readable from another origin.
    app.add_middleware(CodecOnlyCors, allow_origin=settings.temporal_ui_origin)
    app.add_middleware(SecurityHeaders, hsts=settings.hsts_enabled)
    # One server span per request (its trace id goes into the audit entry); the ASGI
    # send/receive spans (two or three more per request) describe the server's plumbing.
    untraced = ("healthz", "readyz")
    if settings.otel_exporter is OtelExporter.NONE:
        # nothing would receive the span's details: it only carries the trace id
        app.add_middleware(
            TraceContext,
            tracer=tracer_provider.get_tracer(__name__),
            excluded_paths=frozenset(f"/{path}" for path in untraced),
        )
    else:
        FastAPIInstrumentor.instrument_app(
            app, excluded_urls=",".join(untraced), exclude_spans=["send", "receive"]
        )
    return app
