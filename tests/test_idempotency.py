"""Idempotency-Key on generations: a retry replays the first result instead of generating again."""

from __future__ import annotations

from conftest import services_of
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.storage.tables import Generation

GENERATIONS = "/api/v1/images/generations"


def _count_generations(client: TestClient) -> int:
    async def count() -> int:
        async with services_of(client.app).sessions() as session:  # type: ignore[arg-type]
            return int(await session.scalar(select(func.count()).select_from(Generation)) or 0)

    return client.portal.call(count)  # type: ignore[union-attr]


def test_retry_with_same_key_replays(client: TestClient, auth: dict[str, str]) -> None:
    headers = {**auth, "Idempotency-Key": "order-1234"}
    first = client.post(GENERATIONS, json={"prompt": "a red kite", "n": 2}, headers=headers)
    retry = client.post(GENERATIONS, json={"prompt": "a red kite", "n": 2}, headers=headers)

    assert first.status_code == 200
    assert retry.status_code == 200
    assert retry.json()["id"] == first.json()["id"]
    assert [item["id"] for item in retry.json()["data"]] == [
        item["id"] for item in first.json()["data"]
    ]
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert _count_generations(client) == 1


def test_replay_as_b64_json_returns_same_bytes(client: TestClient, auth: dict[str, str]) -> None:
    headers = {**auth, "Idempotency-Key": "b64-order"}
    body = {"prompt": "a blue whale", "response_format": "b64_json"}
    first = client.post(GENERATIONS, json=body, headers=headers).json()
    retry = client.post(GENERATIONS, json=body, headers=headers).json()

    assert retry["data"][0]["b64_json"] == first["data"][0]["b64_json"]


def test_same_key_other_body_is_422(client: TestClient, auth: dict[str, str]) -> None:
    headers = {**auth, "Idempotency-Key": "order-77"}
    client.post(GENERATIONS, json={"prompt": "a red kite"}, headers=headers)
    other = client.post(GENERATIONS, json={"prompt": "a green kite"}, headers=headers)

    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    assert _count_generations(client) == 1


def test_keys_are_per_account(client: TestClient, auth: dict[str, str], settings) -> None:  # type: ignore[no-untyped-def]
    from conftest import create_key

    stranger = {"Authorization": f"Bearer {create_key(settings, account_email='s@example.com')}"}
    mine = client.post(
        GENERATIONS, json={"prompt": "kite"}, headers={**auth, "Idempotency-Key": "k1"}
    )
    theirs = client.post(
        GENERATIONS, json={"prompt": "kite"}, headers={**stranger, "Idempotency-Key": "k1"}
    )

    assert mine.status_code == theirs.status_code == 200
    assert mine.json()["id"] != theirs.json()["id"]


def test_without_key_each_request_generates(client: TestClient, auth: dict[str, str]) -> None:
    client.post(GENERATIONS, json={"prompt": "a red kite"}, headers=auth)
    client.post(GENERATIONS, json={"prompt": "a red kite"}, headers=auth)

    assert _count_generations(client) == 2
