"""Contact messages: the service on SQLite and PostgreSQL, and the form on the page."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import make_settings, services_of
from fastapi.testclient import TestClient

from app.contact.service import (
    MAX_MESSAGE_CHARS,
    ContactDraft,
    ContactMessageInvalid,
    ContactService,
    FieldProblem,
)
from app.errors import RateLimitedError
from app.main import create_app
from app.storage.database import create_engine, create_session_factory, migrate
from app.storage.tables import ContactMessage, utc_now

HTML = {"Accept": "text/html"}
DRAFT = ContactDraft(name="Aiko Tanaka", email="aiko@example.com", message="Do you offer invoices?")


@pytest.fixture
async def contact(database_url: str) -> AsyncIterator[ContactService]:
    await migrate(database_url)
    engine = create_engine(database_url)
    yield ContactService(create_session_factory(engine), max_per_hour=3)
    await engine.dispose()


@pytest.mark.anyio
async def test_submit_stores_stripped_message(contact: ContactService) -> None:
    stored = await contact.submit(
        ContactDraft("  Aiko Tanaka ", " aiko@example.com ", "\nDo you offer invoices?\n"),
        locale="ja",
        client_address="203.0.113.7",
    )
    listed = await contact.list_messages()

    assert [message.id for message in listed] == [stored.id]
    assert stored.id.startswith("msg_")
    assert (listed[0].name, listed[0].email, listed[0].message) == (
        "Aiko Tanaka",
        "aiko@example.com",
        "Do you offer invoices?",
    )
    assert listed[0].locale == "ja"
    assert listed[0].client_address == "203.0.113.7"


@pytest.mark.anyio
async def test_submit_reports_every_invalid_field(contact: ContactService) -> None:
    with pytest.raises(ContactMessageInvalid) as raised:
        await contact.submit(
            ContactDraft(" ", "not-an-email", "x" * (MAX_MESSAGE_CHARS + 1)),
            locale="en",
            client_address="203.0.113.7",
        )

    assert raised.value.problems == [
        FieldProblem("name", "missing"),
        FieldProblem("email", "invalid"),
        FieldProblem("message", "too_long", limit=MAX_MESSAGE_CHARS),
    ]
    assert raised.value.instance_code == "invalid_contact_message"
    assert await contact.list_messages() == []


@pytest.mark.anyio
async def test_submit_is_rate_limited_per_address(contact: ContactService) -> None:
    start = utc_now()
    for minute in range(3):
        await contact.submit(
            DRAFT, locale="en", client_address="203.0.113.7", now=start + timedelta(minutes=minute)
        )

    with pytest.raises(RateLimitedError) as raised:
        await contact.submit(
            DRAFT, locale="en", client_address="203.0.113.7", now=start + timedelta(minutes=10)
        )
    await contact.submit(
        DRAFT, locale="en", client_address="198.51.100.2", now=start + timedelta(minutes=10)
    )
    await contact.submit(
        DRAFT, locale="en", client_address="203.0.113.7", now=start + timedelta(minutes=61)
    )

    assert raised.value.instance_code == "contact_rate_limited"
    assert raised.value.retry_after_s == pytest.approx(50 * 60)
    assert len(await contact.list_messages()) == 5


@pytest.mark.anyio
async def test_list_messages_pages_newest_first(contact: ContactService) -> None:
    ids = []
    for index in range(3):
        stored = await contact.submit(DRAFT, locale="en", client_address=f"192.0.2.{index}")
        ids.append(stored.id)
        await asyncio.sleep(0.002)  # ids order by millisecond

    first = await contact.list_messages(limit=2)
    second = await contact.list_messages(limit=2, before_id=first[-1].id)

    assert [message.id for message in first] == [ids[2], ids[1]]
    assert [message.id for message in second] == [ids[0]]


def _stored_messages(client: TestClient) -> list[ContactMessage]:
    services = services_of(client.app)  # type: ignore[arg-type]

    async def fetch() -> list[ContactMessage]:
        return await services.contact.list_messages()

    return client.portal.call(fetch)  # type: ignore[union-attr]


def _token(client: TestClient, language: str = "en") -> str:
    page = client.get(f"/contact?lang={language}", headers=HTML)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def _send(client: TestClient, **fields: str) -> object:
    values = {"name": "Aiko", "email": "aiko@example.com", "message": "Hello", **fields}
    return client.post(
        "/contact",
        data={"csrf_token": _token(client), **values},
        headers=HTML,
        follow_redirects=False,
    )


def test_contact_form_stores_message(client: TestClient) -> None:
    response = _send(client, message="Can I pay by invoice?")
    thanks = client.get("/contact/sent", headers=HTML)

    assert response.status_code == 303  # type: ignore[attr-defined]
    assert "Thank you for your message" in thanks.text
    stored = _stored_messages(client)
    assert [message.message for message in stored] == ["Can I pay by invoice?"]
    assert stored[0].client_address == "testclient"


def test_contact_form_drops_honeypot_message(client: TestClient) -> None:
    response = _send(client, website="http://spam.example")

    assert response.status_code == 303  # type: ignore[attr-defined]
    assert _stored_messages(client) == []


def test_contact_form_shows_field_errors(client: TestClient) -> None:
    response = client.post(
        "/contact",
        data={"csrf_token": _token(client, "ja"), "name": "", "email": "aiko", "message": "Hi"},
        headers=HTML,
    )

    assert response.status_code == 422
    assert (
        '<p id="name-error" class="field-error">この項目を入力してください。</p>' in response.text
    )
    assert 'aria-invalid="true" aria-describedby="email-error"' in response.text
    assert 'value="aiko"' in response.text  # what was typed is kept
    assert _stored_messages(client) == []


def test_contact_form_rate_limit_page(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, contact_max_per_hour=1)
    with TestClient(create_app(settings)) as client:
        first = _send(client)
        second = _send(client)

    assert first.status_code == 303  # type: ignore[attr-defined]
    assert second.status_code == 429  # type: ignore[attr-defined]
    assert "Try again in 60 minutes." in second.text  # type: ignore[attr-defined]
    assert second.headers["retry-after"] == "3600"  # type: ignore[attr-defined]


def test_contact_limit_behind_trusted_proxy(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, contact_max_per_hour=1, trusted_proxies="10.0.0.0/8")
    with TestClient(create_app(settings), client=("10.1.2.3", 40000)) as client:
        statuses = []
        for address in ("198.51.100.1", "198.51.100.2", "198.51.100.1"):
            client.headers["X-Forwarded-For"] = f"{address}, 10.9.9.9"
            statuses.append(_send(client).status_code)  # type: ignore[attr-defined]
        stored = _stored_messages(client)

    assert statuses == [303, 303, 429]
    assert sorted(message.client_address for message in stored) == ["198.51.100.1", "198.51.100.2"]
