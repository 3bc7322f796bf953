"""Accounts in the browser: sign-up with a mailed link, log-in, sessions, reset and deletion.

Mails go to a real SMTP server on 127.0.0.1 (aiosmtpd); the app talks to it over SMTP_URL.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import SmtpServer, bearer, free_port, link_in, make_settings
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.accounts.passwords import hash_password, verify_password
from app.accounts.sessions import BrowserSessionService
from app.container import build_services
from app.errors import MailError
from app.mail import SmtpMailer
from app.main import create_app
from app.settings import Settings
from app.storage.database import migrate
from app.storage.tables import Account, ApiKey, Image
from app.web.sessions import SESSION_COOKIE

HTML = {"Accept": "text/html"}
PASSWORD = "tulip river cobalt"


@pytest.fixture
def web_settings(tmp_path: Path, smtp_server: SmtpServer) -> Settings:
    return make_settings(tmp_path, smtp_url=smtp_server.url, login_attempts_per_15_min=3)


@pytest.fixture
def web(web_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(web_settings), raise_server_exceptions=False) as client:
        yield client


def form_token(client: TestClient, path: str) -> str:
    page = client.get(path, headers=HTML)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def meta_token(client: TestClient, path: str = "/dashboard") -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', client.get(path, headers=HTML).text)
    assert match
    return match.group(1)


def post_form(client: TestClient, path: str, data: dict[str, str], page: str | None = None):  # type: ignore[no-untyped-def]
    token = form_token(client, page or path)
    return client.post(
        path, data={"csrf_token": token, **data}, headers=HTML, follow_redirects=False
    )


def sign_up(client: TestClient, email: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    return post_form(client, "/signup", {"email": email, "password": password, "terms": "yes"})


def log_in(client: TestClient, email: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    return post_form(client, "/login", {"email": email, "password": password})


def signed_up_and_verified(client: TestClient, smtp: SmtpServer, email: str) -> None:
    assert sign_up(client, email).status_code == 200
    verify = client.get(link_in(smtp.wait_for(email), "/verify-email"), follow_redirects=False)
    assert verify.headers["location"] == "/login?verified=1"
    assert log_in(client, email).status_code == 303


def test_sign_up_verify_and_log_in(web: TestClient, smtp_server: SmtpServer) -> None:
    signed_up = sign_up(web, "Ann@Example.com")
    mail = smtp_server.wait_for("ann@example.com")
    before_verify = log_in(web, "ann@example.com")
    verified = web.get(link_in(mail, "/verify-email"), follow_redirects=False)
    logged_in = log_in(web, "ann@example.com")
    cookie = logged_in.headers["set-cookie"]

    assert signed_up.status_code == 200
    assert "Check your inbox" in signed_up.text
    assert mail["Subject"] == "Confirm your email address for VisionCraftAI"
    assert before_verify.status_code == 403
    assert "Confirm your email address first" in before_verify.text
    assert verified.headers["location"] == "/login?verified=1"
    assert logged_in.status_code == 303
    assert logged_in.headers["location"] == "/dashboard"
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "httponly" in cookie.lower()
    assert "samesite=lax" in cookie.lower()
    assert "secure" not in cookie.lower()  # plain HTTP on 127.0.0.1
    assert web.get("/dashboard", headers=HTML).status_code == 200


def test_verification_mail_is_in_the_page_language(
    web: TestClient, smtp_server: SmtpServer
) -> None:
    token = form_token(web, "/signup?lang=ja")
    web.post(
        "/signup",
        data={"csrf_token": token, "email": "kei@example.com", "password": PASSWORD, "terms": "y"},
    )
    mail = smtp_server.wait_for("kei@example.com")

    assert mail["Subject"] == "VisionCraftAI のメールアドレス確認"
    assert "lang=ja" in link_in(mail, "/verify-email")


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "Use at least 10 characters."),
        ("password123", "This password is too easy to guess."),
        ("aaaaaaaaaaaa", "This password is too easy to guess."),
        ("bob.smith@example.com", "This password is too easy to guess."),
    ],
)
def test_sign_up_rejects_weak_password(web: TestClient, password: str, message: str) -> None:
    response = sign_up(web, "bob.smith@example.com", password)

    assert response.status_code == 422
    assert message in response.text
    assert 'aria-invalid="true"' in response.text


def test_sign_up_rejects_taken_email(web: TestClient, smtp_server: SmtpServer) -> None:
    sign_up(web, "taken@example.com")
    again = sign_up(web, "TAKEN@example.com")

    assert again.status_code == 409
    assert "An account with this email address exists already." in again.text
    assert len(smtp_server.to("taken@example.com")) == 1


def test_sign_up_needs_accepted_terms(web: TestClient) -> None:
    response = post_form(web, "/signup", {"email": "t@example.com", "password": PASSWORD})

    assert response.status_code == 422
    assert "Accept the terms of service" in response.text


def test_forms_without_csrf_token_are_refused(web: TestClient) -> None:
    form_token(web, "/login")  # sets the CSRF cookie
    for path in ("/signup", "/login", "/logout", "/password-reset", "/account/delete"):
        response = web.post(path, data={"email": "a@example.com"}, headers=HTML)

        assert response.status_code == 403, path
        assert "The request could not be verified" in response.text


def test_wrong_password_and_unknown_email_read_the_same(
    web: TestClient, smtp_server: SmtpServer
) -> None:
    signed_up_and_verified(web, smtp_server, "cara@example.com")
    web.cookies.clear()
    wrong = log_in(web, "cara@example.com", "not the password")
    unknown = log_in(web, "nobody@example.com", "not the password")

    assert wrong.status_code == unknown.status_code == 401
    assert "The email address or the password is not correct." in wrong.text
    assert "The email address or the password is not correct." in unknown.text


def test_log_in_attempts_are_rate_limited(web: TestClient) -> None:
    statuses = [log_in(web, "dan@example.com", f"guess number {n}").status_code for n in range(4)]
    limited = log_in(web, "dan@example.com", "guess number 5")

    assert statuses == [401, 401, 401, 429]
    assert limited.status_code == 429
    assert "Too many attempts." in limited.text
    assert int(limited.headers["retry-after"]) > 0


def test_log_in_rotates_and_log_out_ends_session(web: TestClient, smtp_server: SmtpServer) -> None:
    signed_up_and_verified(web, smtp_server, "eve@example.com")
    first = web.cookies[SESSION_COOKIE]
    assert log_in(web, "eve@example.com").status_code == 303
    second = web.cookies[SESSION_COOKIE]
    token = form_token(web, "/dashboard")
    logged_out = web.post("/logout", data={"csrf_token": token}, follow_redirects=False)

    assert first != second
    assert logged_out.headers["location"] == "/"
    for stale in (first, second):
        web.cookies.set(SESSION_COOKIE, stale)
        response = web.get("/dashboard", headers=HTML, follow_redirects=False)
        assert response.status_code == 303
        assert "Max-Age=0" in response.headers["set-cookie"]


def test_logged_out_visitor_is_sent_to_log_in(web: TestClient) -> None:
    for path in ("/dashboard", "/admin", "/account"):
        response = web.get(path, headers=HTML, follow_redirects=False)

        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next=%2F{path[1:]}"


def test_log_in_redirects_to_local_next_only(web: TestClient, smtp_server: SmtpServer) -> None:
    signed_up_and_verified(web, smtp_server, "finn@example.com")
    web.cookies.pop(SESSION_COOKIE)
    inside = post_form(
        web, "/login", {"email": "finn@example.com", "password": PASSWORD, "next": "/account"}
    )
    web.cookies.pop(SESSION_COOKIE)
    outside = post_form(
        web,
        "/login",
        {"email": "finn@example.com", "password": PASSWORD, "next": "//evil.example/"},
    )

    assert inside.headers["location"] == "/account"
    assert outside.headers["location"] == "/dashboard"


def test_user_gets_403_on_admin_page(web: TestClient, smtp_server: SmtpServer) -> None:
    signed_up_and_verified(web, smtp_server, "gil@example.com")
    page = web.get("/admin", headers=HTML)
    api = web.get("/api/v1/admin/accounts")

    assert page.status_code == 403
    assert "Admins only" in page.text
    assert api.status_code == 403


def test_cookie_call_to_api_needs_csrf_header(web: TestClient, smtp_server: SmtpServer) -> None:
    signed_up_and_verified(web, smtp_server, "hana@example.com")
    token = meta_token(web)
    read = web.get("/api/v1/account")
    without = web.post("/api/v1/keys", json={"name": "laptop"})
    forged = web.post("/api/v1/keys", json={"name": "laptop"}, headers={"X-CSRF-Token": "1.abc"})
    created = web.post("/api/v1/keys", json={"name": "laptop"}, headers={"X-CSRF-Token": token})

    assert read.status_code == 200
    assert read.json()["email"] == "hana@example.com"
    assert without.status_code == 403
    assert without.json()["code"] == "missing_csrf_token"
    assert forged.json()["code"] == "invalid_csrf_token"
    assert created.status_code == 201
    assert created.json()["key"].startswith("vc_live_")
    assert created.json()["scopes"] == ["images:generate", "images:read", "keys:manage"]


def test_session_generation_spends_credits_and_lands_in_history(
    web: TestClient, smtp_server: SmtpServer
) -> None:
    signed_up_and_verified(web, smtp_server, "ivy@example.com")
    token = meta_token(web)
    before = web.get("/api/v1/account").json()["balance"]["total"]
    generated = web.post(
        "/api/v1/images/generations",
        json={"prompt": "a red kite", "n": 2},
        headers={"X-CSRF-Token": token},
    )
    after = web.get("/api/v1/account").json()["balance"]["total"]
    usage = web.get("/api/v1/usage").json()
    dashboard = web.get("/dashboard", headers=HTML).text

    assert generated.status_code == 200
    assert after == before - 2
    assert usage["total"] == {"images": 2, "credits": 2}
    assert usage["data"][-1]["keys"] == [{"key_id": None, "images": 2, "credits": 2}]
    for image in generated.json()["data"]:
        assert image["id"] in dashboard


def test_password_reset_ends_sessions_and_link_works_once(
    web: TestClient, smtp_server: SmtpServer
) -> None:
    signed_up_and_verified(web, smtp_server, "jo@example.com")
    old_session = web.cookies[SESSION_COOKIE]
    asked = post_form(web, "/password-reset", {"email": "jo@example.com"})
    unknown = post_form(web, "/password-reset", {"email": "nobody@example.com"})
    link = link_in(smtp_server.wait_for("jo@example.com", count=2), "/password-reset/confirm")
    token = re.search(r"token=([^&]+)", link)
    assert token
    weak = post_form(
        web, "/password-reset/confirm", {"token": token.group(1), "password": "x"}, page=link
    )
    changed = post_form(
        web,
        "/password-reset/confirm",
        {"token": token.group(1), "password": "a brand new phrase"},
        page=link,
    )
    reused = web.get(link, headers=HTML)
    web.cookies.set(SESSION_COOKIE, old_session)
    old_session_page = web.get("/dashboard", headers=HTML, follow_redirects=False)

    assert asked.status_code == unknown.status_code == 200
    assert "If an account uses jo@example.com" in asked.text
    assert smtp_server.to("nobody@example.com") == []
    assert weak.status_code == 422
    assert changed.headers["location"] == "/login?reset=1"
    assert reused.status_code == 400
    assert "The link is not valid" in reused.text
    assert old_session_page.status_code == 303
    web.cookies.clear()
    assert log_in(web, "jo@example.com", PASSWORD).status_code == 401
    assert log_in(web, "jo@example.com", "a brand new phrase").status_code == 303


def _rows(settings: Settings, model: type, account_id: str) -> list[object]:
    async def read() -> list[object]:
        services = build_services(settings)
        try:
            async with services.sessions() as session:
                column = model.account_id if model is not Account else model.id  # type: ignore[attr-defined]
                return list(await session.scalars(select(model).where(column == account_id)))
        finally:
            await services.aclose()

    return asyncio.run(read())


def test_account_deletion_removes_keys_images_and_bytes(
    web: TestClient, web_settings: Settings, smtp_server: SmtpServer
) -> None:
    signed_up_and_verified(web, smtp_server, "kai@example.com")
    token = meta_token(web)
    key = web.post("/api/v1/keys", json={"name": "cli"}, headers={"X-CSRF-Token": token}).json()
    web.post(
        "/api/v1/images/generations", json={"prompt": "a boat"}, headers={"X-CSRF-Token": token}
    )
    account_id = web.get("/api/v1/account").json()["id"]
    image_files = list((web_settings.data_dir / "images").rglob("*.png"))
    wrong = post_form(web, "/account/delete", {"password": "not my password"}, page="/account")
    deleted = post_form(web, "/account/delete", {"password": PASSWORD}, page="/account")

    assert len(image_files) == 1
    assert wrong.status_code == 403
    assert "The password is not correct." in wrong.text
    assert deleted.status_code == 200
    assert "Your account was deleted" in deleted.text
    assert "Max-Age=0" in deleted.headers["set-cookie"]
    assert not image_files[0].exists()
    for model in (Account, ApiKey, Image):
        assert _rows(web_settings, model, account_id) == []
    assert web.get("/api/v1/account", headers=bearer(key["key"])).status_code == 401
    assert web.get("/dashboard", headers=HTML, follow_redirects=False).status_code == 303


def test_deletion_waits_for_a_live_subscription(
    web: TestClient, web_settings: Settings, smtp_server: SmtpServer
) -> None:
    from app.storage.tables import BillingSubscription

    signed_up_and_verified(web, smtp_server, "sub@example.com")
    account_id = web.get("/api/v1/account").json()["id"]

    async def subscribe() -> None:
        services = build_services(web_settings)
        try:
            async with services.sessions.begin() as session:
                session.add(
                    BillingSubscription(
                        id="sub_test_live", account_id=account_id, plan="pro", status="active"
                    )
                )
        finally:
            await services.aclose()

    asyncio.run(subscribe())
    refused = post_form(web, "/account/delete", {"password": PASSWORD}, page="/account")

    assert refused.status_code == 409
    assert "Cancel your subscription first" in refused.text
    assert web.get("/api/v1/account").status_code == 200


def test_admin_sees_accounts_by_search(web: TestClient, web_settings: Settings) -> None:
    async def make_admin() -> None:
        services = build_services(web_settings)
        try:
            await services.accounts.create("boss@example.com", role="admin", password=PASSWORD)
            await services.accounts.create("someone@example.org")
        finally:
            await services.aclose()

    asyncio.run(make_admin())
    assert log_in(web, "boss@example.com").status_code == 303
    page = web.get("/admin?q=EXAMPLE.ORG", headers=HTML)
    api = web.get("/api/v1/admin/accounts", params={"search": "boss"}).json()

    assert page.status_code == 200
    assert "someone@example.org" in page.text
    assert "boss@example.com" not in page.text.split('id="accounts"')[1].split("</table>")[0]
    assert [row["email"] for row in api["data"]] == ["boss@example.com"]


def test_outbox_keeps_mail_without_smtp_url(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        sign_up(client, "lee@example.com")
    files = list((tmp_path / "outbox").glob("*.eml"))

    assert len(files) == 1
    content = files[0].read_text()
    assert "To: lee@example.com" in content
    # The link stands whole on one line, so that a developer can copy it from the file.
    links = [line for line in content.splitlines() if "/verify-email?token=" in line]
    assert len(links) == 1
    with TestClient(create_app(make_settings(tmp_path))) as client:
        verified = client.get(links[0].strip(), follow_redirects=False)
    assert verified.headers["location"] == "/login?verified=1"


@pytest.mark.anyio
async def test_old_scrypt_hash_is_replaced_at_log_in(database_url: str, tmp_path: Path) -> None:
    import base64
    import hashlib

    await migrate(database_url)
    services = build_services(make_settings(tmp_path, database_url=database_url))
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    legacy = "scrypt$16384$8$1$" + "$".join(
        base64.b64encode(part).decode() for part in (salt, digest)
    )
    try:
        account = await services.accounts.create("old@example.com")
        async with services.sessions.begin() as session:
            (await session.get(Account, account.id)).password_hash = legacy  # type: ignore[union-attr]
        logged_in = await services.accounts.check_login("old@example.com", PASSWORD)
        stored = (await services.accounts.get(account.id)).password_hash
    finally:
        await services.aclose()

    assert isinstance(logged_in, Account)
    assert stored is not None and stored.startswith("$argon2id$")
    assert verify_password(PASSWORD, stored)


@pytest.mark.anyio
async def test_sessions_end_when_idle_or_too_old(database_url: str, tmp_path: Path) -> None:
    await migrate(database_url)
    services = build_services(make_settings(tmp_path, database_url=database_url))
    now = [datetime(2026, 12, 1, tzinfo=UTC)]
    browser_sessions = BrowserSessionService(
        services.sessions, idle_timeout_s=3600, max_age_s=4 * 3600, clock=lambda: now[0]
    )
    try:
        account = await services.accounts.create("sam@example.com")
        idle = await browser_sessions.start(account.id)
        busy = await browser_sessions.start(account.id)
        for _ in range(3):
            now[0] += timedelta(minutes=50)
            assert await browser_sessions.resolve(busy.token) is not None
        idle_after = await browser_sessions.resolve(idle.token)
        now[0] += timedelta(minutes=100)
        busy_after_max_age = await browser_sessions.resolve(busy.token)
    finally:
        await services.aclose()

    assert idle_after is None
    assert busy_after_max_age is None


def test_session_cookie_is_secure_over_https(tmp_path: Path, smtp_server: SmtpServer) -> None:
    settings = make_settings(tmp_path, smtp_url=smtp_server.url)
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        assert sign_up(client, "una@example.com").status_code == 200
        client.get(link_in(smtp_server.wait_for("una@example.com"), "/verify-email"))
        cookie = log_in(client, "una@example.com").headers["set-cookie"]

    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "; secure" in cookie.lower()


def test_sign_up_says_when_mail_fails(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, smtp_url=f"smtp://127.0.0.1:{free_port()}")
    with TestClient(create_app(settings)) as client:
        response = sign_up(client, "val@example.com")

    assert response.status_code == 503
    assert "The mail could not be sent" in response.text


@pytest.mark.anyio
async def test_smtp_credentials_need_starttls(smtp_server: SmtpServer) -> None:
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "hi"
    message.set_content("hello")
    mailer = SmtpMailer(f"smtp://user:hunter2secret@127.0.0.1:{smtp_server.port}")
    with pytest.raises(MailError) as raised:
        await mailer.send(message)
    await SmtpMailer(smtp_server.url).send(message)

    assert "STARTTLS" in raised.value.detail
    assert "hunter2secret" not in raised.value.detail
    assert smtp_server.wait_for("b@example.com")["Subject"] == "hi"


def test_argon2_hash_verifies() -> None:
    stored = hash_password(PASSWORD)

    assert stored.startswith("$argon2id$")
    assert verify_password(PASSWORD, stored)
    assert not verify_password(PASSWORD + "!", stored)


def test_pages_have_their_own_rate_bucket(web: TestClient, smtp_server: SmtpServer) -> None:
    signed_up_and_verified(web, smtp_server, "ria@example.com")
    token = meta_token(web)
    key = web.post("/api/v1/keys", json={"name": "cli"}, headers={"X-CSRF-Token": token}).json()
    statuses = [web.get("/api/v1/keys").status_code for _ in range(15)]
    with_key = web.get("/api/v1/account", headers={"Authorization": f"Bearer {key['key']}"})

    assert statuses == [200] * 15  # more than the free plan's 10 API requests a minute
    assert with_key.status_code == 200
    assert with_key.headers["ratelimit"].startswith('"key";r=9')
