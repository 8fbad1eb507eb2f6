"""Log a browser page in the way a user does: the app's /login, Keycloak's login form
(identity-first with organisations: username, then password; or both on one page), and
back to the app."""

from __future__ import annotations

from urllib.parse import urlencode, urlparse

from playwright.async_api import Error, Page, Response

from api.web_auth import SESSION_COOKIE

DEMO_PASSWORD = "demo"  # every demo user of the dev realm (deploy/keycloak/server.py)
COOKIE_LIMIT = 4096  # bytes of name=value a browser stores (RFC 6265 §6.1; Chromium drops more)
# Keycloak's error texts beside a field or above the form (keycloak.v2 and older themes)
KEYCLOAK_ERRORS = (
    "[id^='input-error-']:not([id^='input-error-container']), "
    "#kc-error-message, .alert-error, .pf-m-danger"
)


async def login(
    page: Page,
    base_url: str,
    username: str,
    next: str = "/ui/",
    *,
    password: str = DEMO_PASSWORD,
) -> Response:
    """Log `username` in through Keycloak; returns the response of the page `next` landed on."""
    app = base_url.rstrip("/")

    def on_app(url: str) -> bool:
        return url.startswith(app + "/") and urlparse(url).path != "/auth/callback"

    landed = await page.goto(f"{app}/login?{urlencode({'next': next})}")
    for _ in range(3):  # username page, password page, and one spare
        if on_app(page.url):
            break
        username_box, password_box = page.locator("#username"), page.locator("#password")
        await username_box.or_(password_box).first.wait_for(state="visible")
        if await username_box.is_visible() and await username_box.is_editable():
            await username_box.fill(username)
        if await password_box.is_visible():
            await password_box.fill(password)
        try:
            async with page.expect_navigation() as navigation:
                await page.locator("#kc-login").click()
            landed = await navigation.value
        except Error as exc:
            if "ERR_TOO_MANY_REDIRECTS" not in exc.message:
                raise
            # the app sends a browser without a session back to /login, and Keycloak's
            # session sends it straight back: the browser did not keep the session cookie
            raise AssertionError(
                f"the login of {username} loops between the app and Keycloak: Chromium keeps "
                f"no {SESSION_COOKIE} cookie (over {COOKIE_LIMIT} bytes, or not Secure-able?)"
            ) from exc
        errors = page.locator(KEYCLOAK_ERRORS).filter(visible=True)
        if not on_app(page.url) and await errors.count():
            message = " ".join(await errors.all_inner_texts()).strip()
            raise AssertionError(f"Keycloak refused the login of {username}: {message}")
    if not on_app(page.url):
        raise AssertionError(f"the login of {username} did not come back to the app: {page.url}")
    assert landed is not None, f"no response for {page.url}"
    if not any(c["name"] == SESSION_COOKIE for c in await page.context.cookies(app)):
        raise AssertionError(await _why_no_session(landed, username))
    return landed


async def _why_no_session(landed: Response, username: str) -> str:
    """Explain a login that came back without a session cookie (the browser refused it)."""
    request = landed.request.redirected_from
    while request is not None and urlparse(request.url).path != "/auth/callback":
        request = request.redirected_from
    response = await request.response() if request is not None else None
    if response is None:
        return f"the login of {username} set no {SESSION_COOKIE} cookie (no /auth/callback seen)"
    for header in await response.headers_array():
        pair = header["value"].split(";", 1)[0]
        if header["name"].lower() == "set-cookie" and pair.startswith(f"{SESSION_COOKIE}="):
            size = len(pair.encode())
            if size > COOKIE_LIMIT:
                return (
                    f"Chromium dropped the {SESSION_COOKIE} cookie of {username}: its name=value "
                    f"is {size} bytes, over the {COOKIE_LIMIT} bytes browsers store"
                )
            return f"Chromium did not store the {SESSION_COOKIE} cookie of {username}: {header}"
    return f"/auth/callback answered {response.status} without a {SESSION_COOKIE} cookie"
