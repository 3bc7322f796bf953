"""The pages in a real browser: Debian's Chromium driven by Playwright against a live server.

One browser serves the whole module and each test opens its own context, so cookies never leak
between tests. Screenshots of the main pages in both languages go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import LiveServer, free_port, make_settings, running_in_ci
from starlette.types import ASGIApp, Receive, Scope, Send

from app.container import build_services

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
MAIN_PAGES = {
    "landing": "/",
    "generator": "/generate",
    "docs": "/docs",
    "guide": "/docs/guide",
    "quickstart": "/docs/quickstart",
    "errors": "/docs/errors",
    "contact": "/contact",
    "terms": "/legal/terms",
    "privacy": "/legal/privacy",
    "commerce": "/legal/commerce",
}
DEMO_ENDPOINT = "/api/v1/demo/generations"
WAIT_MS = 10_000
# Reports each Content-Security-Policy violation as a console error that ConsoleLog collects.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) => {
    console.error(`CSP violation: ${event.violatedDirective} ${event.blockedURI}`);
});
"""  # a bound on waits, so a broken page fails instead of hanging

if not CHROMIUM.exists():
    if running_in_ci():
        pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run must install chromium")
    pytest.skip(f"{CHROMIUM} is missing: `apt-get install chromium`", allow_module_level=True)

from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright  # noqa: E402


class Gate:
    """An ASGI wrapper that delays requests to one path until the test opens the gate."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.closed = False
        self.opened = threading.Event()

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def gated(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] == self.path and self.closed:
                await asyncio.to_thread(self.opened.wait, WAIT_MS / 1000)
            await app(scope, receive, send)

        return gated

    def close(self) -> None:
        self.closed = True
        self.opened.clear()

    def open(self) -> None:
        self.opened.set()
        self.closed = False


@pytest.fixture(scope="module")
def gate() -> Gate:
    return Gate(DEMO_ENDPOINT)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gate: Gate) -> Iterator[LiveServer]:
    port = free_port()
    settings = make_settings(
        tmp_path_factory.mktemp("browser"), port=port, seller_name="VisionCraftAI K.K."
    )
    with LiveServer(settings, wrap=gate.wrap) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        yield launched
        launched.close()


class ConsoleLog:
    """Console errors and uncaught exceptions of one page; CSP violations arrive as errors."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.add_init_script(CSP_LISTENER)
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)


@pytest.fixture
def page(browser: Browser, server: LiveServer) -> Iterator[Page]:
    context = browser.new_context(base_url=server.base_url, locale="en-US")
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    yield opened
    context.close()


def _accessibility_problems(page: Page) -> list[str]:
    problems: list[str] = page.evaluate(
        """() => {
            const problems = [];
            for (const field of document.querySelectorAll("input, select, textarea")) {
                if (field.type === "hidden") continue;
                const labels = Array.from(field.labels || []).map((label) => label.textContent.trim());
                const named = labels.some((text) => text.length > 0)
                    || field.getAttribute("aria-label") || field.getAttribute("aria-labelledby");
                if (!named) problems.push(`no label: ${field.tagName} ${field.name || field.id}`);
            }
            for (const image of document.querySelectorAll("img")) {
                if (!image.hasAttribute("alt")) problems.push(`no alt: ${image.src}`);
            }
            return problems;
        }"""
    )
    return problems


@pytest.mark.parametrize("language", ["en", "ja"])
def test_main_pages_are_clean_and_accessible(page: Page, language: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    console = ConsoleLog(page)
    for name, path in MAIN_PAGES.items():
        response = page.goto(f"{path}?lang={language}")
        assert response is not None and response.status == 200, path
        expect(page.locator("html")).to_have_attribute("lang", language)
        assert _accessibility_problems(page) == [], path
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{language}.png"), full_page=True)

    assert console.errors == []


def test_landing_loads_every_asset_under_csp(page: Page) -> None:
    console = ConsoleLog(page)
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.on(
        "response",
        lambda response: (
            failed.append(f"{response.status} {response.url}") if response.status >= 400 else None
        ),
    )

    page.goto("/")
    page.wait_for_load_state("networkidle")
    images_loaded = page.evaluate(
        "() => Array.from(document.images).every((image) => image.complete && image.naturalWidth > 0)"
    )
    script_ran = page.evaluate("() => document.documentElement.classList.contains('js')")

    assert failed == []
    assert console.errors == []
    assert images_loaded
    assert script_ran


def test_csp_violation_is_caught(page: Page) -> None:
    console = ConsoleLog(page)
    page.goto("/")
    with page.expect_console_message(lambda message: "CSP violation" in message.text):
        page.evaluate(
            """() => {
                const script = document.createElement("script");
                script.textContent = "window.inlineRan = true;";
                document.body.append(script);
            }"""
        )

    assert page.evaluate("() => window.inlineRan === undefined")
    assert any(error.startswith("CSP violation: script-src") for error in console.errors)


def test_language_switch_changes_and_is_remembered(page: Page) -> None:
    page.goto("/")
    expect(page.locator("h1")).to_have_text("Images from a sentence")

    page.get_by_role("link", name="日本語").click()
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.locator("h1")).to_have_text("一文から画像を")

    page.goto("/docs")
    expect(page.locator("h1")).to_have_text("ドキュメント")

    page.get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.goto("/contact")
    expect(page.locator("h1")).to_have_text("Contact")


def test_generator_by_keyboard_shows_progress_and_problem(
    page: Page, server: LiveServer, gate: Gate
) -> None:
    # A prompt of spaces passes the browser's `required` check; the server rejects it.
    body = {"prompt": "   ", "n": 1, "aspect_ratio": "1:1", "response_format": "url"}
    expected = httpx.post(f"{server.base_url}{DEMO_ENDPOINT}", json=body, timeout=10).json()
    page.goto("/generate")
    _tab_until(page, "#prompt")
    page.keyboard.type("   ")
    _tab_until(page, "#generate-button")

    gate.close()
    try:
        page.keyboard.press("Enter")
        expect(page.get_by_role("status").filter(has_text="Generating")).to_be_visible()
        expect(page.get_by_role("button", name="Generate")).to_be_disabled()
    finally:
        gate.open()

    error = page.locator("#generator-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("The images could not be generated.")
    expect(error).to_contain_text(expected["title"])
    expect(error).to_contain_text(expected["detail"])
    expect(error).to_contain_text(expected["request_id"][:4])
    expect(error.get_by_role("link", name="About this error")).to_have_attribute(
        "href", expected["type"]
    )
    expect(page.locator("#generator-status")).to_be_hidden()
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()
    expect(error).to_be_focused()
    page.screenshot(path=str(SCREENSHOTS / "generator-error-en.png"), full_page=True)


def _stored_messages(server: LiveServer) -> list[Any]:
    """Read the server's contact messages through services of its own, on the same database."""

    async def fetch() -> list[Any]:
        services = build_services(server.settings)
        try:
            return list(await services.contact.list_messages(limit=100))
        finally:
            await services.aclose()

    # Playwright's sync API keeps an event loop running in this thread, so use another one.
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, fetch()).result(timeout=30)


def test_contact_form_by_keyboard_only(page: Page, server: LiveServer) -> None:
    page.goto("/contact")
    typed = {"contact-name": "Keiko Sato", "contact-email": "keiko@example.com"}
    typed["contact-message"] = "Typed with the keyboard only."

    for field_id, text in typed.items():
        _tab_until(page, f"#{field_id}")
        page.keyboard.type(text)
    _tab_until(page, "button[type=submit]")
    page.keyboard.press("Enter")

    expect(page.locator("h1")).to_have_text("Thank you for your message")
    assert page.url.endswith("/contact/sent")
    messages = [row.message for row in _stored_messages(server)]
    assert "Typed with the keyboard only." in messages


def _tab_until(page: Page, selector: str, max_presses: int = 40) -> None:
    for _ in range(max_presses):
        page.keyboard.press("Tab")
        if page.evaluate("(selector) => document.activeElement.matches(selector)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def test_contact_form_honeypot_is_not_stored(page: Page, server: LiveServer) -> None:
    page.goto("/contact?lang=ja")
    page.get_by_label("お名前").fill("Bot")
    page.get_by_label("メールアドレス").fill("bot@example.com")
    page.get_by_label("お問い合わせ内容").fill("Buy cheap things")
    page.locator("#contact-website").fill("http://spam.example", force=True)
    page.get_by_role("button", name="送信する").click()

    expect(page.locator("h1")).to_have_text("お問い合わせありがとうございます")
    assert "Buy cheap things" not in [row.message for row in _stored_messages(server)]


def test_contact_form_refuses_missing_csrf_token(page: Page) -> None:
    page.goto("/contact")
    page.evaluate("() => document.querySelector('input[name=csrf_token]').remove()")
    page.get_by_label("Your name").fill("Aiko")
    page.get_by_label("Email address").fill("aiko@example.com")
    page.get_by_label("Message").fill("Hello")
    with page.expect_response("**/contact") as posted:
        page.get_by_role("button", name="Send message").click()

    assert posted.value.status == 403
    expect(page.locator("h1")).to_have_text("The request could not be verified")
