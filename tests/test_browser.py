"""The pages in a real browser: Debian's Chromium driven by Playwright against a live server.

One browser serves the whole module and each test opens its own context, so cookies never leak
between tests. Screenshots of the main pages in both languages go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    LiveServer,
    SmtpServer,
    free_port,
    link_in,
    make_settings,
    require_program,
    running_in_ci,
)
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
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, gate: Gate, smtp: SmtpServer
) -> Iterator[LiveServer]:
    port = free_port()
    settings = make_settings(
        tmp_path_factory.mktemp("browser"),
        port=port,
        seller_name="VisionCraftAI K.K.",
        smtp_url=smtp.url,
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

    @property
    def script_errors(self) -> list[str]:
        """The errors other than the browser's note on each 4xx answer, which pages expect.

        The dashboards ask billing and health routes that answer 404 or 503 until they are
        set up, and show a note instead.
        """
        return [error for error in self.errors if not error.startswith("Failed to load resource")]


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


# Accounts, the dashboard and the admin pages.

PASSWORD = "tulip river cobalt"
ADMIN_EMAIL = "admin@example.com"
ACCOUNT_PAGES = ("/signup", "/login", "/password-reset")
README_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


def _run_on_server(server: LiveServer, work: Any) -> Any:
    """Run `work(services)` with services of its own on the server's database."""

    async def run() -> Any:
        services = build_services(server.settings)
        try:
            return await work(services)
        finally:
            await services.aclose()

    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, run()).result(timeout=30)


@pytest.fixture(scope="module")
def admin(server: LiveServer) -> str:
    async def create(services: Any) -> str:
        await services.accounts.create(ADMIN_EMAIL, role="admin", password=PASSWORD)
        return ADMIN_EMAIL

    email: str = _run_on_server(server, create)
    return email


def _generated_image_is_shown(page: Page) -> None:
    figure = page.locator("#gallery img").first
    expect(figure).to_be_visible()
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#gallery img'))"
        ".every((image) => image.complete && image.naturalWidth > 0)"
    )
    expect(page.locator("#gallery a", has_text="Download").first).to_have_attribute(
        "download", re.compile(r"^img_\w+\.png$")
    )


def test_visitor_generates_demo_image(page: Page) -> None:
    console = ConsoleLog(page)
    page.goto("/generate")
    page.get_by_label("Prompt", exact=True).fill("a lighthouse on a cliff at sunset")
    page.get_by_label("Style").select_option("watercolor")
    page.get_by_role("button", name="Generate").click()

    _generated_image_is_shown(page)
    expect(page.locator("#results-summary")).to_have_text("1 image generated.")
    expect(
        page.get_by_role("link", name="Sign up for full-quality images and an API key.")
    ).to_be_visible()
    assert console.errors == []


def _keyboard_fill(page: Page, fields: dict[str, str]) -> None:
    for selector, text in fields.items():
        _tab_until(page, selector)
        page.keyboard.type(text)


def test_sign_up_key_curl_generate_and_history(
    page: Page, server: LiveServer, smtp: SmtpServer
) -> None:
    curl = require_program("curl", "curl")
    console = ConsoleLog(page)
    email = "mika@example.com"

    # Sign up with the keyboard only, then follow the link from the mail.
    page.goto("/signup")
    assert _accessibility_problems(page) == []
    _keyboard_fill(page, {"#signup-email": email, "#signup-password": PASSWORD})
    _tab_until(page, "#signup-terms")
    page.keyboard.press("Space")
    _tab_until(page, "form.account-form button[type=submit]")
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Check your inbox")
    page.goto(link_in(smtp.wait_for(email), "/verify-email"))
    expect(page.get_by_role("status")).to_contain_text("Your email address is confirmed.")
    _keyboard_fill(page, {"#login-email": email, "#login-password": PASSWORD})
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Dashboard")
    assert _accessibility_problems(page) == []

    # Create a key: it is shown once, and curl uses it against the live server.
    page.get_by_label("Key name").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    key_box = page.get_by_label("New API key")
    expect(key_box).to_have_value(re.compile(r"^vc_live_\w+$"))
    key = key_box.input_value()
    generated = subprocess.run(
        [
            curl,
            "-sS",
            "--fail-with-body",
            f"{server.base_url}/api/v1/images/generations",
            "-H",
            f"Authorization: Bearer {key}",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"prompt": "a paper boat", "aspect_ratio": "16:9"}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(generated.stdout)["data"][0]["width"] == 1344
    page.reload()
    expect(page.locator("#keys-body")).to_contain_text("laptop")
    assert key not in page.content()

    # Generate from the generator page with the keyboard; the image lands in the history.
    page.goto("/generate")
    expect(page.get_by_role("note")).to_contain_text("Images are generated on your Free plan")
    _keyboard_fill(page, {"#prompt": "a red kite over green hills"})
    _tab_until(page, "#generate-button")
    page.keyboard.press("Enter")
    _generated_image_is_shown(page)
    page.set_viewport_size({"width": 1280, "height": 1300})
    page.screenshot(path=str(SCREENSHOTS / "generator-result-en.png"))
    image_id = page.locator("#gallery a").first.get_attribute("download")
    assert image_id

    page.goto("/dashboard#history")
    expect(page.locator(f'#history a[download="{image_id}"]')).to_be_visible()
    expect(page.locator("#history img")).to_have_count(2)
    expect(page.locator("#balance-total")).to_have_text("48")
    expect(page.locator("#billing-status")).to_contain_text("Online payment is not")
    page.goto("/dashboard")
    page.wait_for_function("() => document.querySelector('#usage-chart').width > 0")
    page.screenshot(path=str(SCREENSHOTS / "dashboard-en.png"))
    page.goto("/dashboard?lang=ja")
    expect(page.locator("h1")).to_have_text("ダッシュボード")
    page.screenshot(path=str(SCREENSHOTS / "dashboard-ja.png"), full_page=True)
    page.goto("/generate?lang=ja")
    page.screenshot(path=str(SCREENSHOTS / "generator-user-ja.png"), full_page=True)
    page.goto("/dashboard?lang=en")

    # Revoking asks first; afterwards the key no longer works.
    page.get_by_role("button", name="Revoke").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("laptop")
    page.get_by_role("button", name="Revoke the key").click()
    expect(page.locator("#keys-body")).to_contain_text("Revoked")
    revoked = subprocess.run(
        [
            curl,
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            f"{server.base_url}/api/v1/account",
            "-H",
            f"Authorization: Bearer {key}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert revoked.stdout == "401"

    # A user may not open the admin pages.
    response = page.goto("/admin")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("Admins only")
    assert console.script_errors == []


def test_logged_out_visitor_is_sent_to_log_in(page: Page) -> None:
    page.goto("/dashboard")

    assert page.url.endswith("/login?next=%2Fdashboard")
    expect(page.locator("h1")).to_have_text("Log in")


def test_admin_sees_accounts_usage_and_contact_message(
    page: Page, server: LiveServer, admin: str
) -> None:
    console = ConsoleLog(page)

    async def new_customer(services: Any) -> None:
        account = await services.accounts.create("nao@example.com")
        created = await services.keys.create(account.id, name="ci")
        return created.token

    token = _run_on_server(server, new_customer)
    httpx.post(
        f"{server.base_url}/api/v1/images/generations",
        json={"prompt": "a tea cup", "n": 2},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).raise_for_status()
    page.goto("/contact")
    page.get_by_label("Your name").fill("Rin")
    page.get_by_label("Email address").fill("rin@example.com")
    page.get_by_label("Message").fill("Can I pay by invoice?")
    page.get_by_role("button", name="Send message").click()
    expect(page.locator("h1")).to_have_text("Thank you for your message")

    page.goto("/login?next=/admin")
    page.get_by_label("Email address").fill(admin)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("h1")).to_have_text("Admin")
    assert _accessibility_problems(page) == []

    expect(page.locator(".accounts-table")).to_contain_text("nao@example.com")
    page.locator("#usage details summary").click()
    expect(page.locator(".usage-table")).to_contain_text("free")
    expect(page.locator(".outcomes-table tbody tr").first).to_contain_text("0.0 %")
    expect(page.locator("#revenue-summary")).to_contain_text("MRR")
    expect(page.locator("#revenue-summary")).to_contain_text("Active subscriptions")
    expect(page.locator("#health-checks")).to_contain_text("database:responseTime: pass")
    expect(page.locator("#health-status")).not_to_have_text("Loading…")
    expect(page.locator("#messages")).to_contain_text("Can I pay by invoice?")

    page.get_by_label("Search by email").fill("nao@")
    page.get_by_role("button", name="Search").click()
    expect(page.locator(".accounts-table tbody tr")).to_have_count(1)
    page.goto("/admin?lang=en")
    page.wait_for_function("() => document.querySelector('#usage-chart').width > 0")
    page.screenshot(path=str(SCREENSHOTS / "admin-en.png"), full_page=True)
    page.goto("/admin?lang=ja")
    expect(page.locator("h1")).to_have_text("管理")
    page.screenshot(path=str(SCREENSHOTS / "admin-ja.png"), full_page=True)
    assert console.script_errors == []


@pytest.mark.parametrize("language", ["en", "ja"])
def test_account_pages_are_accessible(page: Page, language: str) -> None:
    for path in ACCOUNT_PAGES:
        page.goto(f"{path}?lang={language}")
        expect(page.locator("html")).to_have_attribute("lang", language)
        assert _accessibility_problems(page) == [], path
