"""The baseline of the API's GET benchmark: a bare FastAPI route with the same JWT check.

The check is the API's own `TokenValidator` (RS256 against the same JWKS, cached), run
where the API runs it: on the event loop while the keys are cached, else in the thread
pool; there is no database, policy decision or audit entry. Like `referral api`, it
settles its start-up heap before it serves (`services.runtime.settle_heap`).
Served by uvicorn like the API: `uvicorn --factory bench.bare_api:create_app`, configured
by the same REFERRAL_JWKS_URL, REFERRAL_JWT_ISSUER and REFERRAL_JWT_AUDIENCE.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import TokenValidator
from services.errors import Unauthenticated
from services.runtime import settle_heap
from services.settings import Settings

_bearer = HTTPBearer(auto_error=False)


def create_app() -> FastAPI:
    """The bare app: one GET that checks the bearer token and answers a constant body."""
    settings = Settings()
    validator = TokenValidator(
        jwks_url=settings.jwks_url,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        cache_seconds=settings.jwks_cache_seconds,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        settle_heap()
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/referrals/{referral_id}")
    async def get_referral(
        referral_id: uuid.UUID,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> dict[str, Any]:
        if credentials is None:
            raise HTTPException(401)
        try:
            # as the API checks it: on the event loop while the keys are cached, else in a
            # thread (a JWKS fetch is due)
            token = credentials.credentials
            principal = validator.validate_cached(token) or await run_in_threadpool(
                validator.validate, token
            )
        except Unauthenticated:
            raise HTTPException(401) from None
        return {"id": str(referral_id), "stage": "bare", "organisation": principal.organisation}

    return app
