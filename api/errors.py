"""RFC 9457 problem+json answers, in one place, for every error the API can give."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import RPCTimeoutOrCancelledError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import get_context
from api.schemas import Problem
from services.audit import events as audit_events
from services.db import database_unavailable, pool_exhausted
from services.errors import DomainError, Unauthenticated

PROBLEM = "application/problem+json"
# How long a caller is asked to wait before trying a 503 again (seconds): the database,
# Temporal or the identity provider coming back takes a few seconds.
RETRY_AFTER_SECONDS = 2
logger = logging.getLogger("api.errors")

# What each error status means for a caller of this API: the OpenAPI document says it once.
STATUS_DESCRIPTIONS = {
    400: "Bad request: the body could not be read",
    401: "Unauthenticated: no valid bearer token",
    403: "Forbidden: the policies refuse this access (the refusal is audited)",
    404: "Not found, or not visible to the caller",
    409: "Conflict: the step is not possible in the referral's current state",
    413: "Payload too large",
    422: "Invalid request: it does not match the schema",
    428: "Precondition required: the request needs an Idempotency-Key",
    503: "Service unavailable: the database, the workflow service or the identity provider",
}
_METHODS_WITH_BODY = {"post", "put", "patch", "delete"}
_HTTP_METHODS = _METHODS_WITH_BODY | {"get", "head", "options", "trace"}


def problem(status: int, title: str, detail: str, slug: str, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body = {"type": f"urn:referral:problem:{slug}", "title": title, "status": status}
    body["detail"] = detail
    body.update(extra)
    headers = None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="referral"'}
    elif status == 503 or slug == "idempotency-key-in-use":
        # a request with the same key is still being served (or its step is still running
        # in its workflow): the same request again shortly finishes it or repeats its answer
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
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
    if isinstance(exc, RPCTimeoutOrCancelledError):
        # a call to Temporal that did not answer in time (e.g. an update's poll under load)
        logger.warning("temporal call timed out: %s", type(exc).__name__)
        return (
            503,
            "Service unavailable",
            "the workflow service did not answer in time",
            ("unavailable"),
        )
    if isinstance(exc, RPCError):
        if exc.status is RPCStatusCode.NOT_FOUND:
            return 409, "Referral process ended", "the referral's process has ended", "ended"
        logger.warning("temporal unavailable: %s", exc.status)
        return 503, "Service unavailable", "the workflow service is unavailable", "unavailable"
    if isinstance(exc, RPCTimeoutOrCancelledError):
        # Temporal did not answer in time (e.g. the workflow's activities wait for the
        # database): the step keeps its update id, so trying again cannot take it twice
        logger.warning("temporal call timed out: %s", type(exc).__name__)
        detail = "the workflow service did not answer in time; try again"
        return 503, "Service unavailable", detail, "unavailable"
    if database_unavailable(exc):
        # the database went away (restart, failover, network): the pool reconnects
        logger.warning("database unavailable: %s", type(exc).__name__)
        return 503, "Service unavailable", "the database is unavailable; try again", "unavailable"
    if pool_exhausted(exc):
        # every pooled connection is busy (or a lock wait timed out): try again, never hang
        logger.warning("database busy: %s", type(exc).__name__)
        return 503, "Service unavailable", "the database is busy; try again", "unavailable"
    return None


async def _known(request: Request, exc: Exception) -> JSONResponse:
    described = describe(exc)
    assert described is not None
    if isinstance(exc, Unauthenticated):
        try:
            await run_in_threadpool(_record_failed_authentication, request)
        except Exception as error:  # noqa: BLE001 - unrecorded: the answer may not leave
            logger.warning("failed authentication not recorded: %s", type(error).__name__)
            return problem(
                503, "Service unavailable", "the audit log is unavailable", "unavailable"
            )
    return problem(*described)


def _record_failed_authentication(request: Request) -> None:
    """Every 401 leaves an audit entry (IHE BALP login, outcome refused): the web login's
    callback (`/auth/...`) or a request to the API."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        return  # an app without a runtime (unit tests of the handlers) records nothing
    channel = "web" if request.url.path.startswith("/auth/") else "api"
    audit_events.record_failed_authentication(
        runtime.gatekeeper, channel=channel, ctx=get_context(request)
    )


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
    if pool_exhausted(exc) or database_unavailable(exc):
        return await _known(request, exc)
    return await _unexpected(request, exc)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A router's `responses=`: the problems its routes answer beyond those of their shape."""
    return {status: {"description": STATUS_DESCRIPTIONS[status]} for status in statuses}


def _problems_of(method: str, operation: dict[str, Any]) -> set[int]:
    # The problems an operation can answer follow from its shape: what it takes, whether it
    # needs a token (then it decides access and touches the database or Temporal).
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    statuses: set[int] = set()
    if parameters or has_body:
        statuses.add(422)
    if has_body:
        statuses.add(400)
    if method in _METHODS_WITH_BODY:
        statuses.add(413)  # RequestLimits refuses any body over the limit
    if operation.get("security"):
        statuses |= {401, 403, 503}
    if any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    return statuses


def document_problems(openapi: dict[str, Any]) -> dict[str, Any]:
    """Document every error answer of every operation as problem+json (in place)."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem_schema.pop("$defs", {}))
    schemas["Problem"] = problem_schema
    content = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path_item in openapi.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _HTTP_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status in sorted(_problems_of(method, operation)):
                responses.setdefault(str(status), {})
            for code, response in responses.items():
                if code[:1] in ("4", "5"):
                    # FastAPI's own 422 says application/json; the API answers problem+json
                    response["description"] = STATUS_DESCRIPTIONS.get(int(code), "Error")
                    response["content"] = content
    # FastAPI's validation error models, now referenced by no operation
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return openapi


def install(app: FastAPI) -> None:
    """Register every problem+json handler and document the answers in the OpenAPI."""
    app.add_exception_handler(PoolTimeout, _database)
    app.add_exception_handler(OperationalError, _database)
    app.add_exception_handler(InterfaceError, _database)
    app.add_exception_handler(DomainError, _known)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(WorkflowUpdateFailedError, _known)
    app.add_exception_handler(RPCError, _known)
    app.add_exception_handler(RPCTimeoutOrCancelledError, _known)
    app.add_exception_handler(Exception, _unexpected)
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_problems(plain_openapi())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
