"""Dependencies as aliases: the runtime, Temporal, the authenticated principal, the request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from opentelemetry import trace
from temporalio.client import Client

from api.auth import TokenValidator
from services.access import RequestContext
from services.errors import Unauthenticated, Unavailable
from services.principal import Principal
from services.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="An access token of the referral realm")


# The plain dependencies are coroutines: FastAPI runs a `def` dependency in the thread pool,
# a hop that costs more than the dependency itself on every request.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_temporal(request: Request) -> Client:
    try:
        client: Client = await request.app.state.ensure_temporal(request.app)
    except Exception:  # noqa: BLE001 - any connection failure is "unavailable"
        raise Unavailable("the workflow service is unavailable") from None
    return client


@dataclass(frozen=True)
class Caller:
    """Who calls, before a bearer token is checked. `authenticate` checks it (blocking: a
    JWKS fetch may be due) in the thread that serves the request, so that a read costs one
    thread-pool hop instead of two; `authenticate_cached` checks it on the event loop when
    the keys it needs are cached. A session of the web UI is known already."""

    known: Principal | None = None
    token: str | None = None
    validator: TokenValidator | None = None

    def authenticate(self) -> Principal:
        """The caller's principal; raises Unauthenticated, or Unavailable (the identity
        provider cannot be reached and no cached key checks the token)."""
        if self.known is not None:
            return self.known
        token, validator = self._bearer()
        return validator.validate(token)

    def authenticate_cached(self) -> Principal | None:
        """`authenticate` without blocking, for the event loop: None when the token's check
        needs the JWKS fetched (then `authenticate` in a thread). Raises as it does."""
        if self.known is not None:
            return self.known
        token, validator = self._bearer()
        return validator.validate_cached(token)

    def _bearer(self) -> tuple[str, TokenValidator]:
        if self.token is None or self.validator is None:
            raise Unauthenticated("a bearer token is required")
        return self.token, self.validator


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None:
        from api.web_auth import principal_from_session

        principal = await principal_from_session(request)
        if principal is not None:
            return Caller(known=principal)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("a bearer token is required")
    token = credentials.credentials
    if len(token) > 8192:
        raise Unauthenticated("the token is not valid")
    validator: TokenValidator = request.app.state.tokens
    return Caller(token=token, validator=validator)


async def get_principal(caller: Annotated[Caller, Depends(get_caller)]) -> Principal:
    if caller.known is not None:
        return caller.known
    # JWKS fetches are blocking I/O: keep them off the event loop.
    return await run_in_threadpool(caller.authenticate)


def get_context(request: Request) -> RequestContext:
    span = trace.get_current_span().get_span_context()
    trace_id = format(span.trace_id, "032x") if span.is_valid else None
    request_id = getattr(request.state, "request_id", None)
    return RequestContext(
        request_id=request_id, trace_id=trace_id, client_address=client_address(request)
    )


async def _context(request: Request) -> RequestContext:
    return get_context(request)


def client_address(request: Request) -> str | None:
    """The client's network address as the server saw it (behind a proxy: the proxy's,
    unless the server is told to trust its forwarded headers)."""
    return request.client.host[:64] if request.client is not None else None


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
# For a route that checks the token itself, in the one thread it does its blocking work in.
CallerDep = Annotated[Caller, Depends(get_caller)]
ContextDep = Annotated[RequestContext, Depends(_context)]
