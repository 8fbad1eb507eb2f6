"""RFC 9457 problem+json answers, in one place, for every error the API can give."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from services.db import pool_exhausted
from services.errors import DomainError

PROBLEM = "application/problem+json"
logger = logging.getLogger("api.errors")


def problem(status: int, title: str, detail: str, slug: str, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body = {"type": f"urn:referral:problem:{slug}", "title": title, "status": status}
    body["detail"] = detail
    body.update(extra)
    headers = {"WWW-Authenticate": 'Bearer realm="referral"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Echo where and what kind of error, never the submitted value (it may be personal data).
    return [
        {
            "loc": [str(p) for p in err.get("loc", ())],
            "msg": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ][:50]


def describe(exc: Exception) -> tuple[int, str, str, str] | None:
    """(status, title, detail, type slug) of an error a caller can cause or meet, None for an
    unexpected one; the JSON problems and the UI's error pages both answer with it."""
    if isinstance(exc, DomainError):
        return exc.status, exc.title, exc.detail, exc.type_slug
    if isinstance(exc, WorkflowUpdateFailedError):
        cause = exc.cause
        detail = cause.message if isinstance(cause, ApplicationError) else "the step was refused"
        return 409, "Step refused", detail, "step-refused"
    if isinstance(exc, RPCError):
        if exc.status is RPCStatusCode.NOT_FOUND:
            return 409, "Referral process ended", "the referral's process has ended", "ended"
        logger.warning("temporal unavailable: %s", exc.status)
        return 503, "Service unavailable", "the workflow service is unavailable", "unavailable"
    if pool_exhausted(exc):
        # every pooled connection is busy (or a lock wait timed out): try again, never hang
        logger.warning("database busy: %s", type(exc).__name__)
        return 503, "Service unavailable", "the database is busy; try again", "unavailable"
    return None


async def _known(_: Request, exc: Exception) -> JSONResponse:
    described = describe(exc)
    assert described is not None
    return problem(*described)


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem(
        422,
        "Invalid request",
        "the request does not match the schema",
        "validation",
        errors=_validation_errors(exc),
    )


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles = {
        400: "Bad request",
        404: "Not found",
        405: "Method not allowed",
        413: "Payload too large",
    }
    return problem(
        exc.status_code,
        titles.get(exc.status_code, "Error"),
        str(exc.detail),
        f"http-{exc.status_code}",
    )


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    described = describe(exc)
    if described is not None:
        return problem(*described)
    logger.error("unexpected error: %s", type(exc).__name__)
    return problem(500, "Internal error", "an unexpected error occurred", "internal")


async def _database(request: Request, exc: Exception) -> JSONResponse:
    if pool_exhausted(exc):
        return await _known(request, exc)
    return await _unexpected(request, exc)


def install(app: FastAPI) -> None:
    """Register every problem+json handler."""
    app.add_exception_handler(PoolTimeout, _database)
    app.add_exception_handler(OperationalError, _database)
    app.add_exception_handler(DomainError, _known)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(WorkflowUpdateFailedError, _known)
    app.add_exception_handler(RPCError, _known)
    app.add_exception_handler(Exception, _unexpected)
