"""One referral through the three roles' pages in Chromium, each user logged in through the
real Keycloak: the prosecutor's office creates it and records the consent, the care
provider accepts it, runs it and closes it, the prosecutor decides, the auditor searches
the log and verifies it. A screenshot of each role's home goes to the run's artifacts.
No page a justice user is shown carries clinical or welfare content."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, Page, expect

from tests.integration.browser.login import login

pytestmark = [pytest.mark.integration, pytest.mark.keycloak, pytest.mark.browser]

CLINICAL = "Clinical: browser-test CBT session plan, moderate use disorder"
WELFARE = "Welfare: browser-test housing support requested"
CLOSING = "Closing: browser-test relapse prevention plan"
CARE_ONLY = (CLINICAL, WELFARE, CLOSING)
NAME = "Browser Testpersoon-Peeters"
# the identity-provider id of demo-care-worker-cgg-antwerpen (deploy/keycloak/realm)
CARE_WORKER_SUBJECT = "5e589a99-94a9-5d17-a0e5-7212389f4c85"

NewPage = Callable[..., Awaitable[Page]]


class Watch:
    """Collects what a page must never show: CSP violations and script errors."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def attach(self, page: Page) -> Page:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(f"console error: {message.text}")


async def _justice_sees(page: Page, seen: list[str]) -> None:
    html = await page.content()
    seen.append(html)
    for text in CARE_ONLY:
        assert text not in html, "care content on a justice page"


async def _reload_until(page: Page, url: str, selector: str, tries: int = 60) -> None:
    for _ in range(tries):
        await page.goto(url)
        if await page.locator(selector).count():
            return
        await page.wait_for_timeout(250)
    raise AssertionError(f"{selector} never appeared on {url}")


async def test_one_referral_through_the_three_roles_pages_in_chromium(
    live_server: str, new_page: NewPage, artifacts: Path
) -> None:
    shots = artifacts / "screenshots"
    watch = Watch()
    justice_pages: list[str] = []

    # ---- the prosecutor's office: home, new referral, consent ----------------------------
    office = watch.attach(await new_page())
    await login(office, live_server, "demo-prosecutor-antwerpen")
    await expect(office).to_have_url(f"{live_server}/ui/justice")
    await expect(office.get_by_role("heading", level=1)).to_have_text("Referrals of the office")
    await office.screenshot(path=shots / "home-prosecutor.png", full_page=True)
    await _justice_sees(office, justice_pages)

    # keyboard first: the first Tab reaches the skip link
    await office.keyboard.press("Tab")
    await expect(office.locator(".skip")).to_be_focused()

    await office.get_by_role("link", name="New referral").first.click()
    await office.get_by_label("Name").fill(NAME)
    await office.get_by_label("Date of birth").fill("1990-02-03")
    await office.get_by_label("National register number").fill("90.02.03-123.42")
    await office.get_by_label("Phone").fill("+32 470 00 00 00")
    await office.get_by_label("Offence category").select_option("drug_possession")
    await office.get_by_label("Notice number").fill("AN.12.L1.000777-26")
    await office.get_by_label("Target group").select_option("substance_use")
    await office.get_by_label("Substance or behaviour").fill("cannabis")
    await office.get_by_role("button", name="Create the referral").click()
    await expect(office).to_have_url(re.compile(r"/ui/referrals/[0-9a-f-]{36}\?done=created$"))
    referral_url = office.url.split("?")[0]
    await expect(office.get_by_role("status")).to_contain_text("The referral was created")
    await expect(office.locator("main")).to_contain_text(NAME)

    await office.get_by_label("Reference of the signed consent form").fill("paper form 777")
    await office.get_by_label(re.compile("The right to withdraw consent")).check()
    await office.get_by_role("button", name="Record the consent").click()
    await expect(office.get_by_role("status")).to_contain_text("The consent was recorded")
    await _justice_sees(office, justice_pages)

    # ---- the care provider: the inbox, accept --------------------------------------------
    intake = watch.attach(await new_page())
    await login(intake, live_server, "demo-intake-coordinator-cgg-antwerpen")
    await expect(intake).to_have_url(f"{live_server}/ui/care")
    path = referral_url.removeprefix(live_server)
    await _reload_until(intake, f"{live_server}/ui/care", f'a[href="{path}"]')
    await expect(intake.locator("#offers-h + table")).to_contain_text("min left")
    await intake.screenshot(path=shots / "home-care-provider.png", full_page=True)
    await intake.locator(f'a[href="{path}"]').click()
    await expect(intake.get_by_label("Reason for declining")).to_be_visible()
    await intake.get_by_role("button", name="Accept").click()
    await expect(intake.get_by_role("status")).to_contain_text("You accepted the referral")
    # need to know: the intake coordinator puts the care worker on the case, by user id
    await intake.get_by_role("link", name="Care team: who may see the case's content").click()
    await intake.get_by_label("User id of the care worker").fill(CARE_WORKER_SUBJECT)
    await intake.get_by_role("button", name="Assign").click()
    await expect(intake.get_by_role("status")).to_contain_text("The care worker was assigned")
    await expect(intake.locator("main table")).to_contain_text(CARE_WORKER_SUBJECT)

    # ---- the care worker: intake, progress with notes, the access report, close ---------
    worker = watch.attach(await new_page())
    await login(worker, live_server, "demo-care-worker-cgg-antwerpen", next=path)
    await worker.get_by_role("button", name="Record the intake").click()
    await expect(worker.get_by_role("status")).to_contain_text("The intake was recorded")
    await worker.get_by_label("Clinical notes").fill(CLINICAL)
    await worker.get_by_label("Welfare notes").fill(WELFARE)
    await worker.get_by_role("button", name="Send the progress report").click()
    await expect(worker.get_by_role("status")).to_contain_text("progress report was recorded")
    await expect(worker.locator("main")).to_contain_text(CLINICAL)

    await worker.get_by_role("link", name="The person's access report").click()
    await expect(worker.locator("article.report h1")).to_be_visible()
    await worker.get_by_label("Language of the report").select_option("fr")
    await worker.get_by_role("button", name="Show").click()
    await expect(worker.locator("article.report")).to_have_attribute("lang", "fr")
    await worker.emulate_media(media="print")
    await expect(worker.locator("header.top")).to_be_hidden()  # printable: no navigation
    await worker.emulate_media(media="screen")

    # meanwhile the office sees attendance, never the notes
    await office.goto(referral_url)
    await expect(office.locator("main")).to_contain_text("Attending")
    await _justice_sees(office, justice_pages)

    await worker.goto(referral_url)
    await worker.get_by_label("Outcome").select_option("completed")
    await worker.get_by_label("Closing clinical note").fill(CLOSING)
    await worker.get_by_role("button", name="Close the trajectory").click()
    await expect(worker.get_by_role("status")).to_contain_text("The trajectory was closed")

    # ---- the prosecutor decides ---------------------------------------------------------
    await _reload_until(office, referral_url, "#decision")
    await _justice_sees(office, justice_pages)
    await office.get_by_label("The prosecutor's decision").select_option("dismissed")
    await office.get_by_role("button", name="Record the decision").click()
    await expect(office.get_by_role("status")).to_contain_text("The decision was recorded")
    await expect(office.locator("main")).to_contain_text("Dismissed")
    await _justice_sees(office, justice_pages)
    await office.goto(f"{live_server}/ui/justice")
    await _justice_sees(office, justice_pages)

    # the language switcher: Dutch, then back
    await office.get_by_role("link", name="Nederlands").click()
    await expect(office.locator("html")).to_have_attribute("lang", "nl")
    await expect(office.get_by_role("heading", level=1)).to_have_text(
        "Doorverwijzingen van het parket"
    )
    await expect(office.locator("main")).to_contain_text("Seponering")  # the decision, in Dutch
    await office.screenshot(path=shots / "home-prosecutor-nl.png", full_page=True)
    await _justice_sees(office, justice_pages)
    await office.get_by_role("link", name="English").click()
    await expect(office.locator("html")).to_have_attribute("lang", "en")

    # ---- the auditor: search, timeline, verify now --------------------------------------
    auditor = watch.attach(await new_page())
    await login(auditor, live_server, "demo-auditor-dpo-office")
    await expect(auditor).to_have_url(f"{live_server}/ui/audit")
    await auditor.get_by_label("Organisation").fill("cgg-antwerpen")
    await auditor.get_by_role("button", name="Search").click()  # HTMX swaps the results in
    await expect(auditor.locator("#results table")).to_be_visible()
    await expect(auditor.locator("#results")).to_contain_text("cgg-antwerpen")
    await auditor.get_by_role("button", name="Verify now").click()
    await expect(auditor.locator("#verification")).to_contain_text("Verified")
    await auditor.screenshot(path=shots / "home-auditor.png", full_page=True)
    await auditor.locator("#results a[href^='/ui/audit/timeline/']").first.click()
    await expect(auditor.get_by_role("heading", level=1)).to_contain_text("Access timeline")
    timeline = await auditor.content()
    for text in (*CARE_ONLY, NAME):
        assert text not in timeline, "case content on an auditor page"

    assert len(justice_pages) >= 7
    assert not watch.problems, watch.problems


async def test_forms_work_without_javascript(
    live_server: str, browser_sessions: object, artifacts: Path
) -> None:
    """The core forms post and redirect as plain HTML forms (JavaScript off)."""
    from tests.integration.browser.conftest import BrowserSessions

    assert isinstance(browser_sessions, BrowserSessions)
    page = await browser_sessions.new_page(java_script_enabled=False)
    await login(page, live_server, "demo-auditor-dpo-office")
    await page.get_by_label("Decision").select_option("permit")
    await page.get_by_role("button", name="Search").click()
    await expect(page).to_have_url(re.compile(r"/ui/audit\?search=1.*outcome=permit"))
    await expect(page.locator("#results table")).to_be_visible()
    await page.get_by_role("button", name="Verify now").click()
    await expect(page.locator("#verification")).to_contain_text("Verified")
