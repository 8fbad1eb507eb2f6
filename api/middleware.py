"""ASGI middleware: a request id on every request, and a hard limit on body size."""

from __future__ import annotations

import json
import uuid
from typing import Final

from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Tracer
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PROBLEM


def _problem_bytes(status: int, title: str, detail: str, slug: str) -> bytes:
    return json.dumps(
        {"type": f"urn:referral:problem:{slug}", "title": title, "status": status, "detail": detail}
    ).encode()


class RequestLimits:
    """Refuses bodies over `max_body_bytes` with 413 before any handler runs."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        has_length = False
        for name, value in scope.get("headers", []):
            if name == b"x-request-id" and len(value) <= 128:
                request_id = value.decode("latin-1")
            if name == b"content-length":
                has_length = True
                try:
                    too_large = int(value) > self.max
                except ValueError:
                    too_large = True
                if too_large:
                    await self._refuse(send)
                    return
        scope.setdefault("state", {})["request_id"] = request_id or str(uuid.uuid4())
        if not has_length and scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
            # A streamed (chunked) body: read it whole, up to the limit, before any handler
            # runs, so that routes that never read their body refuse it too.
            buffered = await self._buffer(receive)
            if buffered is None:
                await self._refuse(send)
                return
            receive = _replay(buffered, receive)
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max:
                    # surfaces through the app's own handlers as a 413 problem
                    raise HTTPException(413, f"the body exceeds {self.max} bytes")
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", scope["state"]["request_id"].encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, limited_receive, tracking_send)

    async def _buffer(self, receive: Receive) -> list[Message] | None:
        """The request's messages, or None as soon as the body passes the limit."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > self.max:
                return None
            if not message.get("more_body", False):
                return messages

    async def _refuse(self, send: Send) -> None:
        body = _problem_bytes(
            413, "Payload too large", f"the body exceeds {self.max} bytes", "too-large"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that hands out the buffered messages first, then the real channel."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


# Answers that are not pages of the role UI (JSON, problem+json, text, redirects) load
# nothing: they get the strictest policy. The UI pages and the docs set their own.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
HSTS = "max-age=63072000; includeSubDomains"


class SecurityHeaders:
    """Headers every answer carries, whatever produced it (a route, an error handler, the
    static files): no caching of answers that may carry personal data, no content sniffing,
    no framing, no referrer, and HSTS where the deployment runs behind TLS."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def secured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                present = {k.lower() for k, _ in headers}
                wanted = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", API_CSP.encode()),
                    # scripts and styles of the UI change only with a release
                    (b"cache-control", b"no-cache" if static else b"no-store"),
                ]
                if self.hsts:
                    wanted.append((b"strict-transport-security", HSTS.encode()))
                headers += [(k, v) for k, v in wanted if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, secured_send)


class CodecOnlyCors:
    """CORS for the Temporal UI's origin on the codec endpoint only: every other route
    answers no preflight and sends no CORS header, so no other site's script may read it."""

    def __init__(self, app: ASGIApp, *, allow_origin: str, prefix: str = "/codec") -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=[allow_origin],
            allow_methods=["POST"],
            allow_headers=["Authorization", "Content-Type", "X-Namespace"],
            allow_credentials=False,
        )
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] == "http" and (path == self.prefix or path.startswith(self.prefix + "/")):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class TraceContext:
    """One server span per request, when no exporter would receive its details: the span
    only carries the trace id (from the caller's `traceparent`, or a new one) that the
    request's audit entries and the workflow steps it starts record. OpenTelemetry's ASGI
    instrumentation, which gathers the attributes and metrics an exporter would carry, costs
    a read about a tenth of its CPU for nothing when there is none (`make bench`)."""

    def __init__(self, app: ASGIApp, *, tracer: Tracer, excluded_paths: frozenset[str]) -> None:
        self.app = app
        self.excluded = excluded_paths
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.excluded:
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", [])
            if name in _PROPAGATED
        }
        with self.tracer.start_as_current_span(
            str(scope.get("method", "HTTP")), context=extract(carrier), kind=SpanKind.SERVER
        ):
            await self.app(scope, receive, send)


# the headers of W3C trace context, as the default propagator reads them
_PROPAGATED: Final = frozenset({b"traceparent", b"tracestate", b"baggage"})
