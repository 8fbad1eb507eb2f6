"""The API documentation page in Chromium: it renders from this origin alone, under its CSP,
with no console or CSP error. Any request to another host fails the test (the CDN copies of
Swagger UI and ReDoc are what issue 15 removed), and the page works offline, as the browser
here has no internet. ReDoc is gone: its bundle fetches its logo from a CDN."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import ConsoleMessage, Page, Route

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def _open(page: Page, url: str, ready: str) -> list[str]:
    problems: list[str] = []
    own = urlsplit(url).netloc

    async def only_this_origin(route: Route) -> None:
        if urlsplit(route.request.url).netloc not in (own, ""):
            problems.append(f"request to another host: {route.request.url}")
            await route.abort()
        else:
            await route.continue_()

    def console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning") and "Content Security Policy" in message.text:
            problems.append(f"CSP: {message.text}")
        elif message.type == "error":
            problems.append(f"console error: {message.text}")

    await page.route("**/*", only_this_origin)
    page.on("console", console)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    response = await page.goto(url)
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert (
        "script-src 'self'" in csp
        and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    )
    await page.wait_for_selector(ready, timeout=20_000)
    return problems


async def test_swagger_ui_renders_from_this_origin_under_its_csp(
    live_server: str, page: Page, artifacts: Path
) -> None:
    problems = await _open(page, f"{live_server}/docs", ".swagger-ui .info .title")
    assert "Referral engine" in await page.inner_text(".swagger-ui .info .title")
    await page.wait_for_selector(".opblock-tag", timeout=20_000)  # the operations are listed
    await page.screenshot(path=str(artifacts / "screenshots" / "docs-swagger.png"))
    assert problems == []
