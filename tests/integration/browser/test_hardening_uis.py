"""Issue 15's UI items in Chromium, each user logged in through the real Keycloak:

- item 4: a consent without the `compliance` category leaves the care worker the forms of
  the trajectory it runs (intake, progress, close), not the withdrawal form alone;
- item 5: the platform administrator's web login lands on a page (the policies'
  explanation), not on a JSON 401;
- item 6: a refused step reads in Dutch on the Dutch UI, without the API's English words;
  an office's referral awaiting consent is not shown as ended.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from api.web.i18n import Translator
from api.web.labels import REFUSALS
from tests.integration.browser.login import login
from tests.integration.journey import consent_body, new_referral

pytestmark = [pytest.mark.integration, pytest.mark.keycloak, pytest.mark.browser]

NewPage = Callable[..., Awaitable[Page]]
WITHOUT_COMPLIANCE = [
    "identity",
    "contact",
    "judicial_context",
    "referral_reason",
    "clinical",
    "welfare",
]


class Api:
    """The live server's JSON API with the demo users' Keycloak tokens."""

    def __init__(self, keycloak: Any, base_url: str) -> None:
        self.keycloak = keycloak
        self.base_url = base_url

    def _token(self, username: str) -> str:
        from deploy.keycloak.server import password_grant  # on sys.path via the fixture

        resp = password_grant(self.keycloak, username)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["access_token"])

    async def call(
        self, username: str, method: str, path: str, body: Any = None, **headers: str
    ) -> dict[str, Any]:
        token = await asyncio.to_thread(self._token, username)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as client:
            resp = await client.request(
                method,
                f"/api/v1{path}",
                json=body,
                headers={"Authorization": f"Bearer {token}", **headers},
            )
        assert resp.status_code in (200, 201), (path, resp.status_code, resp.text[:300])
        return resp.json()  # type: ignore[no-any-return]

    async def create(self, **consent: Any) -> str:
        office = "demo-prosecutor-antwerpen"
        view = await self.call(
            office, "POST", "/referrals", new_referral(), **{"Idempotency-Key": str(uuid.uuid4())}
        )
        if consent:
            await self.call(
                office, "POST", f"/referrals/{view['id']}/consent", consent_body(**consent)
            )
        return str(view["id"])

    async def wait_stage(self, referral_id: str, stage: str) -> None:
        for _ in range(200):
            view = await self.call("demo-prosecutor-antwerpen", "GET", f"/referrals/{referral_id}")
            if view["stage"] == stage:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"never reached {stage}")


async def test_issue_15_ui_items_in_chromium(
    live_server: str, new_page: NewPage, keycloak: Any
) -> None:
    api = Api(keycloak, live_server)

    # ---- item 4: the care worker keeps the trajectory's forms without `compliance` -------
    in_care = await api.create(categories=WITHOUT_COMPLIANCE)
    await api.wait_stage(in_care, "offered")
    await api.call("demo-intake-coordinator-cgg-antwerpen", "POST", f"/referrals/{in_care}/accept")
    worker = await new_page()
    await login(
        worker, live_server, "demo-care-worker-cgg-antwerpen", next=f"/ui/referrals/{in_care}"
    )
    await worker.get_by_role("button", name="Record the intake").click()
    await expect(worker.get_by_role("status")).to_contain_text("The intake was recorded")
    await expect(worker.get_by_role("button", name="Send the progress report")).to_be_visible()
    await expect(worker.locator(f'form[action="/ui/referrals/{in_care}/close"]')).to_be_visible()

    # ---- item 5: the administrator lands on a page -----------------------------------------
    admin = await new_page()
    await login(admin, live_server, "demo-admin")
    await expect(admin).to_have_url(f"{live_server}/ui/audit/explain")
    await expect(admin.get_by_role("heading", level=1)).to_have_text("Explain the policies")

    # ---- item 6: a refused step reads in Dutch ---------------------------------------------
    awaiting = await api.create()
    office = await new_page(locale="nl-BE")
    await login(office, live_server, "demo-prosecutor-antwerpen", next="/ui/justice")
    row = office.locator("tr", has=office.locator(f'a[href="/ui/referrals/{awaiting}"]'))
    await expect(row).to_contain_text(Translator("nl")("Awaiting consent"))
    await expect(office.locator("main")).not_to_contain_text("Beëindigde dossiers")
    stale = await office.context.new_page()
    await stale.goto(f"{live_server}/ui/referrals/{awaiting}")
    await office.goto(f"{live_server}/ui/referrals/{awaiting}")
    cancel = f'form[action="/ui/referrals/{awaiting}/cancel"] button'
    await office.locator(cancel).click()
    await expect(office.get_by_role("status")).to_be_visible()
    await stale.locator(cancel).click()  # the referral has ended meanwhile: refused
    problem = stale.locator(".problem")
    await expect(problem).to_be_visible()
    text = await problem.inner_text()
    for english in REFUSALS:
        assert english not in text, text
    assert not re.search(r"not allowed|nothing was done|this step", text, re.I), text
    dutch = Translator("nl")
    assert any(dutch(said) in text for said in REFUSALS.values()) or "fase" in text, text
