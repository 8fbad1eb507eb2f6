"""Browser fixtures: Debian's Chromium driven by Playwright (async API), the app served over
real HTTP on a free loopback port, and Keycloak's `referral-web` client told about that
origin for the session, so the browser logs in exactly as a user does.

    async def test_x(live_server: str, page: Page, artifacts: Path) -> None:
        await login(page, live_server, "demo-prosecutor-antwerpen", next="/ui/")

Screenshots go under `artifacts/test-run/screenshots/`; a failing test also leaves a
screenshot of each open page and a Playwright trace (`artifacts/test-run/traces/`, open
with `.venv/bin/playwright show-trace <zip>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Browser, BrowserContext, Error, Page, async_playwright
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.main import create_app
from api.web_auth import WEB_CLIENT_ID
from services.runtime import Runtime
from services.settings import Settings
from tests import system_tools

ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts" / "test-run"
# No sandbox: CI runs as root in a container. No background networking: there is no internet.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]
TIMEOUT_MS = 20_000  # per Playwright action; Keycloak's first login page renders slowly

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # keep each phase's report on the test, so fixture teardown knows whether it failed
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _failed(item: pytest.Item) -> bool:
    return any(r.failed for r in item.stash.get(_REPORTS, {}).values())


@pytest.fixture(scope="session", autouse=True)
def chromium_executable() -> str:
    """Debian's chromium; without it CI fails and a developer's run skips, with the reason."""
    return system_tools.require(
        "chromium",
        "the browser tests need Debian's chromium: `apt-get install chromium` "
        "(`make test` does it when run as root)",
    )


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """`artifacts/test-run` (git-ignored); `screenshots/` and `traces/` emptied for this run."""
    for sub in ("screenshots", "traces"):
        folder = ARTIFACTS / sub
        shutil.rmtree(folder, ignore_errors=True)  # only this run's files, none of the last
        folder.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@contextlib.contextmanager
def web_client_allows(keycloak: Any, origin: str) -> Iterator[None]:
    """Let Keycloak's `referral-web` client redirect to `origin` (admin REST API), then undo it.

    The realm file only knows http://127.0.0.1:8000; the browser tests' app runs on a free port.
    """
    from deploy.keycloak.server import admin_client  # on sys.path through the keycloak fixture

    with admin_client(keycloak) as admin:
        found = admin.get("/clients", params={"clientId": WEB_CLIENT_ID})
        found.raise_for_status()
        original: dict[str, Any] = found.json()[0]
        client = copy.deepcopy(original)
        client["redirectUris"] = [*original.get("redirectUris", []), f"{origin}/*"]
        client["webOrigins"] = [*original.get("webOrigins", []), origin]
        attributes = client.setdefault("attributes", {})
        # Keycloak keeps several post-logout redirect URIs in one attribute, "##"-separated
        logout = [u for u in attributes.get("post.logout.redirect.uris", "").split("##") if u]
        attributes["post.logout.redirect.uris"] = "##".join([*logout, f"{origin}/*"])
        admin.put(f"/clients/{original['id']}", json=client).raise_for_status()
    try:
        yield
    finally:
        with admin_client(keycloak) as admin:  # a fresh admin token: the first one expires fast
            admin.put(f"/clients/{original['id']}", json=original).raise_for_status()


class _LoopbackServer(uvicorn.Server):
    """uvicorn on the test session's event loop; Ctrl+C stays pytest's, not the server's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@pytest.fixture(scope="session")
async def live_server(
    keycloak: Any,
    settings: Settings,
    runtime: Runtime,
    dev_server: WorkflowEnvironment,
    worker: Worker,
) -> AsyncIterator[str]:
    """The app over real HTTP at http://127.0.0.1:<free port>, logging in with the real Keycloak.

    It runs on the session's event loop, beside the Temporal client and worker it uses.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # bound before anyone hears of the port: no race for it
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    web_settings = settings.model_copy(
        update={
            "jwks_url": keycloak.jwks_url,
            "jwt_issuer": keycloak.issuer,
            "api_base_url": base_url,
        }
    )
    app = create_app(web_settings, runtime=runtime, temporal=dev_server.client)
    config = uvicorn.Config(app, lifespan="on", ws="none", log_level="warning", access_log=False)
    server = _LoopbackServer(config)
    with web_client_allows(keycloak, base_url):
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            for _ in range(200):
                if server.started or serving.done():
                    break
                await asyncio.sleep(0.05)
            if not server.started:
                raise RuntimeError(f"the app did not start on {base_url}")
            yield base_url
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, timeout=15)
            sock.close()


@pytest.fixture(scope="session")
async def browser(chromium_executable: str) -> AsyncIterator[Browser]:
    """One headless Chromium for the whole session; each test gets fresh contexts."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


class BrowserSessions:
    """The browser contexts of one test, each its own cookie jar (one user each), traced."""

    def __init__(self, browser: Browser, artifacts: Path, name: str) -> None:
        self._browser = browser
        self._artifacts = artifacts
        self._name = name
        self.contexts: list[BrowserContext] = []

    async def new_context(self, **options: Any) -> BrowserContext:
        options.setdefault("locale", "en-US")
        context = await self._browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        await context.tracing.start(screenshots=True, snapshots=True)
        self.contexts.append(context)
        return context

    async def new_page(self, **options: Any) -> Page:
        return await (await self.new_context(**options)).new_page()

    async def close(self, *, failed: bool) -> None:
        """Close every context; on failure keep a screenshot of each page and the trace."""
        for i, context in enumerate(self.contexts):
            stem = f"{self._name}-{i}"
            if failed:
                for j, page in enumerate(context.pages):
                    with contextlib.suppress(Error):
                        shot = self._artifacts / "screenshots" / f"FAILED-{stem}-{j}.png"
                        await page.screenshot(path=shot, full_page=True)
                await context.tracing.stop(path=self._artifacts / "traces" / f"{stem}.zip")
            else:
                await context.tracing.stop()
            await context.close()


@pytest.fixture
async def browser_sessions(
    browser: Browser, artifacts: Path, request: pytest.FixtureRequest
) -> AsyncIterator[BrowserSessions]:
    name = re.sub(r"[^\w.-]+", "_", request.node.nodeid.split("/")[-1])
    sessions = BrowserSessions(browser, artifacts, name)
    try:
        yield sessions
    finally:
        await sessions.close(failed=_failed(request.node))


@pytest.fixture
async def context(browser_sessions: BrowserSessions) -> BrowserContext:
    """A fresh browser context (empty cookie jar) for this test."""
    return await browser_sessions.new_context()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    """A page in this test's `context`."""
    return await context.new_page()


@pytest.fixture
def new_page(browser_sessions: BrowserSessions) -> Callable[..., Awaitable[Page]]:
    """`await new_page()`: a page in another fresh context, e.g. for a second user."""
    return browser_sessions.new_page
