"""CSRF tokens: the protector itself, and forms refused without a valid token."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.errors import CsrfError
from app.web.csrf import CSRF_COOKIE, TOKEN_MAX_AGE_S, CsrfProtector

NOW = 1_800_000_000.0
HTML = {"Accept": "text/html"}


@pytest.fixture
def protector() -> CsrfProtector:
    return CsrfProtector(b"csrf-test-secret")


def test_token_verifies_for_its_cookie_and_session(protector: CsrfProtector) -> None:
    token = protector.issue("cookie-a", "session-1", now=NOW)

    protector.verify(token, "cookie-a", "session-1", now=NOW + 60)


@pytest.mark.parametrize(
    ("token", "cookie", "session", "now", "code"),
    [
        ("VALID", None, "session-1", NOW, "missing_csrf_cookie"),
        (None, "cookie-a", "session-1", NOW, "missing_csrf_token"),
        ("", "cookie-a", "session-1", NOW, "missing_csrf_token"),
        ("VALID", "cookie-b", "session-1", NOW, "invalid_csrf_token"),
        ("VALID", "cookie-a", "session-2", NOW, "invalid_csrf_token"),
        ("VALID", "cookie-a", "", NOW, "invalid_csrf_token"),
        ("garbage", "cookie-a", "session-1", NOW, "invalid_csrf_token"),
        ("12.abc", "cookie-a", "session-1", NOW, "invalid_csrf_token"),
        ("VALID", "cookie-a", "session-1", NOW + TOKEN_MAX_AGE_S + 1, "expired_csrf_token"),
        ("VALID", "cookie-a", "session-1", NOW - 3600, "expired_csrf_token"),
    ],
)
def test_token_is_rejected(
    protector: CsrfProtector,
    token: str | None,
    cookie: str | None,
    session: str,
    now: float,
    code: str,
) -> None:
    if token == "VALID":
        token = protector.issue("cookie-a", "session-1", now=NOW)
    with pytest.raises(CsrfError) as raised:
        protector.verify(token, cookie, session, now=now)

    assert raised.value.instance_code == code


def test_token_from_another_secret_is_rejected(protector: CsrfProtector) -> None:
    token = CsrfProtector(b"another-secret").issue("cookie-a", now=NOW)

    with pytest.raises(CsrfError):
        protector.verify(token, "cookie-a", now=NOW)


def _form_token(client: TestClient) -> str:
    page = client.get("/contact", headers=HTML)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def test_page_sets_httponly_csrf_cookie(client: TestClient) -> None:
    response = client.get("/contact", headers=HTML)
    cookie = response.headers["set-cookie"]

    assert cookie.startswith(f"{CSRF_COOKIE}=")
    assert "httponly" in cookie.lower()
    assert "samesite=lax" in cookie.lower()
    assert "secure" not in cookie.lower()  # plain HTTP on 127.0.0.1
    # The meta tag (for script calls) and the form carry the same token. Both are read from one
    # response, because a token issued a second later differs.
    meta = re.search(r'<meta name="csrf-token" content="([^"]+)">', response.text)
    form = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
    assert meta and form
    assert meta.group(1) == form.group(1)


def test_form_without_token_is_refused_with_page(client: TestClient) -> None:
    client.get("/contact", headers=HTML)
    response = client.post(
        "/contact",
        data={"name": "Aiko", "email": "aiko@example.com", "message": "Hello"},
        headers=HTML,
    )

    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "The request could not be verified" in response.text
    assert 'href="/docs/errors#missing_csrf_token"' in response.text


def test_form_with_token_of_other_browser_is_refused(client: TestClient) -> None:
    token = _form_token(client)
    client.cookies.clear()
    client.cookies.set(CSRF_COOKIE, "a-different-browser")
    response = client.post(
        "/contact",
        data={"csrf_token": token, "name": "Aiko", "email": "aiko@example.com", "message": "Hi"},
        headers={**HTML, "Accept-Language": "ja"},
        follow_redirects=False,
    )

    assert response.status_code == 403
    assert "リクエストを確認できませんでした" in response.text


def test_script_call_without_token_gets_problem_json(client: TestClient) -> None:
    client.get("/contact", headers=HTML)
    response = client.post("/contact", json={"name": "Aiko"})

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "missing_csrf_token"


def test_token_in_header_is_accepted(client: TestClient) -> None:
    token = _form_token(client)
    response = client.post(
        "/contact",
        data={"name": "Aiko", "email": "aiko@example.com", "message": "Hello"},
        headers={**HTML, "X-CSRF-Token": token},
        follow_redirects=False,
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/contact/sent"
