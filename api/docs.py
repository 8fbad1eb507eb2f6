"""The API's documentation page, served with pinned assets from a package, under a CSP.

FastAPI's default `/docs` and `/redoc` load Swagger UI and ReDoc from a CDN (floating
versions, no integrity hashes) onto the UI's origin, where a tampered file could read the
personal-data pages with the session cookie. Here the Swagger UI assets come from the pinned
`fastapi-offline` package (its wheel's RECORD carries their hashes), the start-up script is
a file of ours, and the page may load nothing from anywhere else. ReDoc is not offered: its
bundle loads its logo from the vendor's CDN, whatever its options.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_PATH = "/docs-assets"

# Swagger UI: scripts and styles from this origin only; its icons are data: URIs.
SWAGGER_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)
_SWAGGER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Referral engine API</title>
<link rel="icon" href="{assets}/favicon.png">
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head><body>
<div id="swagger-ui" data-openapi-url="/openapi.json"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="/static/api-docs.js"></script>
</body></html>
"""

router = APIRouter(include_in_schema=False)


def _page(body: str, csp: str) -> HTMLResponse:
    return HTMLResponse(
        body.format(assets=ASSETS_PATH),
        headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"},
    )


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    """Swagger UI for the OpenAPI document."""
    return _page(_SWAGGER, SWAGGER_CSP)


def install(app: FastAPI) -> None:
    """Serve the documentation pages and their pinned assets (no CDN)."""
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="docs-assets")
