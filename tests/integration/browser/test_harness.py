"""The browser harness itself: Chromium logs in through the real Keycloak and the app's
session cookie comes back HttpOnly, Secure and SameSite=Lax, also on plain-http loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.async_api import Page

from api.web_auth import SESSION_COOKIE
from tests.integration.browser.login import login

pytestmark = [pytest.mark.integration, pytest.mark.keycloak, pytest.mark.browser]


async def test_a_prosecutor_logs_in_through_keycloak_in_chromium(
    live_server: str, page: Page, artifacts: Path
) -> None:
    landed = await login(page, live_server, "demo-prosecutor-antwerpen", next="/api/v1/referrals")

    assert landed.status == 200, await landed.text()
    assert page.url == f"{live_server}/api/v1/referrals"
    listed = json.loads(
        await page.locator("pre").first.inner_text()
    )  # Chromium shows JSON in <pre>
    assert isinstance(listed["items"], list) and listed["total"] >= len(listed["items"])

    cookies = {c["name"]: c for c in await page.context.cookies(live_server)}
    session = cookies[SESSION_COOKIE]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Lax"
    assert SESSION_COOKIE not in await page.evaluate("document.cookie")  # scripts cannot read it

    await page.screenshot(path=artifacts / "screenshots" / "harness-prosecutor-referrals.png")
