"""Accounts over HTTP: balance, usage, keys, scopes, admin routes, 402 and plan limits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from conftest import add_plan, bearer, create_account_key, create_key
from fastapi.testclient import TestClient

from app.accounts.keys import KeyMode
from app.settings import Settings

GENERATIONS = "/api/v1/images/generations"


def _generate(client: TestClient, token: str, **body: object) -> dict[str, object]:
    response = client.post(GENERATIONS, json={"prompt": "a kite", **body}, headers=bearer(token))
    assert response.status_code == 200, response.text
    payload: dict[str, object] = response.json()
    return payload


def _balance(client: TestClient, token: str) -> dict[str, int]:
    balance: dict[str, int] = client.get("/api/v1/account", headers=bearer(token)).json()["balance"]
    return balance


def test_account_shows_plan_balance_and_cycle(client: TestClient, settings: Settings) -> None:
    _, token = create_account_key(settings, "ann@example.com")

    body = client.get("/api/v1/account", headers=bearer(token)).json()

    assert body["email"] == "ann@example.com"
    assert body["role"] == "user"
    assert body["plan"]["name"] == "free"
    assert body["plan"]["currency"] == "jpy"
    assert body["plan"]["credits_per_image"] == {"1K": 1, "2K": 2, "4K": 4}
    assert body["balance"] == {"allowance": 50, "purchased": 0, "total": 50, "reserved": 0}
    started = datetime.fromisoformat(body["cycle"]["started_at"])
    ends = datetime.fromisoformat(body["cycle"]["ends_at"])
    assert started <= datetime.now(UTC) < ends


def test_generation_spends_credits_and_shows_in_usage(
    client: TestClient, settings: Settings
) -> None:
    _, token = create_account_key(settings, "ann@example.com")
    key_id = token.split("_")[2]
    _generate(client, token, n=2)
    _generate(client, token, image_size="2K")

    usage = client.get("/api/v1/usage", headers=bearer(token)).json()
    today = datetime.now(UTC).date().isoformat()

    assert _balance(client, token)["allowance"] == 46
    assert usage["to"] == today
    assert len(usage["data"]) == 30
    assert usage["data"][-1] == {
        "date": today,
        "images": 3,
        "credits": 4,
        "keys": [{"key_id": key_id, "images": 3, "credits": 4}],
    }
    assert usage["total"] == {"images": 3, "credits": 4}


def test_usage_rejects_reversed_range(client: TestClient, settings: Settings) -> None:
    _, token = create_account_key(settings, "ann@example.com")

    response = client.get(
        "/api/v1/usage", params={"from": "2026-03-02", "to": "2026-03-01"}, headers=bearer(token)
    )

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_date_range"


def test_test_key_spends_nothing(client: TestClient, settings: Settings) -> None:
    _, token = create_account_key(settings, "ann@example.com", mode=KeyMode.TEST)
    _generate(client, token, n=2)

    assert _balance(client, token)["total"] == 50


def test_no_credits_is_402(client: TestClient, settings: Settings) -> None:
    add_plan(settings, "empty", monthly_credits=0)
    _, token = create_account_key(settings, "broke@example.com", plan="empty")

    response = client.post(GENERATIONS, json={"prompt": "a kite", "n": 2}, headers=bearer(token))
    problem = response.json()

    assert response.status_code == 402
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["code"] == "insufficient_credits"
    assert problem["balance"] == 0
    assert problem["price"] == 2
    assert problem["purchase_url"] == f"{settings.resolved_public_base_url}/pricing"
    assert problem["error"]["type"] == "insufficient_quota"
    assert "costs 2 credits" in problem["detail"]


def test_images_per_request_is_limited_by_plan(client: TestClient, settings: Settings) -> None:
    _, token = create_account_key(settings, "ann@example.com")

    response = client.post(GENERATIONS, json={"prompt": "kites", "n": 3}, headers=bearer(token))

    assert response.status_code == 422
    assert response.json()["code"] == "too_many_images"
    assert response.json()["images_per_request"] == 2
    assert _balance(client, token)["total"] == 50


def test_every_answer_carries_rate_limit_fields(client: TestClient, settings: Settings) -> None:
    _, token = create_account_key(settings, "ann@example.com")

    first = client.get("/api/v1/account", headers=bearer(token))
    missing = client.get("/api/v1/images/img_00000000000000000000000000", headers=bearer(token))

    assert first.headers["ratelimit-policy"] == '"key";q=10;w=60, "account";q=10;w=60'
    assert first.headers["ratelimit"] == '"key";r=9;t=6, "account";r=9;t=6'
    assert first.headers["x-ratelimit-limit-requests"] == "10"
    assert first.headers["x-ratelimit-remaining-requests"] == "9"
    assert first.headers["x-ratelimit-reset-requests"] == "6s"
    assert missing.status_code == 404
    assert missing.headers["x-ratelimit-remaining-requests"] == "8"


def test_account_limit_spans_its_keys(client: TestClient, settings: Settings) -> None:
    add_plan(settings, "three", requests_per_minute=3)
    _, first = create_account_key(settings, "ann@example.com", plan="three")
    second = client.post("/api/v1/keys", json={"name": "second"}, headers=bearer(first)).json()[
        "key"
    ]

    statuses = [
        client.get("/api/v1/account", headers=bearer(token)).status_code
        for token in (first, second, second, first)
    ]

    # Creating the second key was the account's first request of the three.
    assert statuses == [200, 200, 429, 429]


def test_missing_scope_is_403_naming_it(client: TestClient, settings: Settings) -> None:
    _, token = create_account_key(settings, "ann@example.com", scopes=["images:read"])

    generate = client.post(GENERATIONS, json={"prompt": "kite"}, headers=bearer(token))
    keys = client.get("/api/v1/keys", headers=bearer(token))

    assert generate.status_code == 403
    assert generate.json()["code"] == "missing_scope"
    assert generate.json()["missing_scope"] == "images:generate"
    assert keys.json()["missing_scope"] == "keys:manage"


def test_admin_routes_refuse_users_and_unscoped_keys(
    client: TestClient, settings: Settings
) -> None:
    _, user = create_account_key(settings, "ann@example.com")
    _, unscoped_admin = create_account_key(settings, "boss@example.com", role="admin")

    for token in (user, unscoped_admin):
        for method, path in [
            ("GET", "/api/v1/admin/accounts"),
            ("GET", "/api/v1/admin/usage"),
            ("POST", "/api/v1/admin/accounts/acct_x/credits"),
        ]:
            response = client.request(
                method, path, json={"credits": 5, "reason": "x"}, headers=bearer(token)
            )
            assert response.status_code == 403, (token, path)
            assert response.json()["missing_scope"] == "admin"


def test_user_cannot_get_admin_scope(client: TestClient, settings: Settings) -> None:
    _, user = create_account_key(settings, "ann@example.com")

    response = client.post(
        "/api/v1/keys", json={"name": "sneaky", "scopes": ["admin"]}, headers=bearer(user)
    )

    assert response.status_code == 403
    assert response.json()["code"] == "admin_scope_not_allowed"


def test_admin_account_key_without_admin_scope_cannot_mint_one(
    client: TestClient, settings: Settings
) -> None:
    _, holder = create_account_key(
        settings,
        "boss@example.com",
        role="admin",
        plan="unlimited",
        scopes=["admin", "keys:manage", "images:read"],
    )
    plain = create_key(settings, account_email="boss@example.com")

    refused = client.post(
        "/api/v1/keys", json={"name": "x", "scopes": ["admin"]}, headers=bearer(plain)
    )
    allowed = client.post(
        "/api/v1/keys",
        json={"name": "y", "scopes": ["admin", "images:read"]},
        headers=bearer(holder),
    )

    assert refused.status_code == 403
    assert refused.json()["scopes"] == ["admin"]
    assert allowed.status_code == 201
    assert allowed.json()["scopes"] == ["admin", "images:read"]


@pytest.fixture
def admin_token(client: TestClient, settings: Settings) -> str:
    _, token = create_account_key(
        settings,
        "boss@example.com",
        role="admin",
        plan="unlimited",
        scopes=["admin", "images:generate", "images:read"],
    )
    return token


def test_admin_lists_accounts_and_grants_credits(
    client: TestClient, settings: Settings, admin_token: str
) -> None:
    account_id, user = create_account_key(settings, "ann@example.com")

    listed = client.get("/api/v1/admin/accounts", headers=bearer(admin_token)).json()
    granted = client.post(
        f"/api/v1/admin/accounts/{account_id}/credits",
        json={"credits": 25, "reason": "support ticket 12"},
        headers=bearer(admin_token),
    )
    unknown = client.post(
        "/api/v1/admin/accounts/acct_00000000000000000000000000/credits",
        json={"credits": 25, "reason": "typo"},
        headers=bearer(admin_token),
    )

    emails = [account["email"] for account in listed["data"]]
    assert emails == ["admin@localhost", "boss@example.com", "ann@example.com"]
    assert granted.status_code == 201
    assert granted.json()["balance"]["purchased"] == 25
    assert _balance(client, user) == {"allowance": 50, "purchased": 25, "total": 75, "reserved": 0}
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "account_not_found"


def test_admin_usage_by_plan_and_backend(
    client: TestClient, settings: Settings, admin_token: str
) -> None:
    _, user = create_account_key(settings, "ann@example.com")
    _generate(client, user, n=2)
    _generate(client, admin_token)

    rows = client.get("/api/v1/admin/usage", headers=bearer(admin_token)).json()["data"]
    today = datetime.now(UTC).date().isoformat()

    assert rows == [
        {"date": today, "plan": "free", "backend": "demo", "images": 2, "credits": 2},
        {"date": today, "plan": "unlimited", "backend": "demo", "images": 1, "credits": 0},
    ]


def test_keys_api_creates_lists_and_revokes(client: TestClient, settings: Settings) -> None:
    _, token = create_account_key(settings, "ann@example.com")
    _, stranger = create_account_key(settings, "eve@example.com")

    created = client.post(
        "/api/v1/keys", json={"name": "ci", "mode": "test"}, headers=bearer(token)
    )
    new_key = created.json()["key"]
    listed = client.get("/api/v1/keys", headers=bearer(token)).json()["data"]
    works = client.get("/api/v1/account", headers=bearer(new_key))
    foreign = client.delete(f"/api/v1/keys/{created.json()['id']}", headers=bearer(stranger))
    revoked = client.delete(f"/api/v1/keys/{created.json()['id']}", headers=bearer(token))
    after = client.get("/api/v1/account", headers=bearer(new_key))

    assert created.status_code == 201
    assert new_key.startswith("vc_test_")
    assert [key["name"] for key in listed] == ["test", "ci"]
    assert all("key" not in key and new_key not in str(key) for key in listed)
    assert works.status_code == 200
    assert foreign.status_code == 404
    assert revoked.json()["revoked_at"] is not None
    assert after.status_code == 401
    assert after.json()["code"] == "revoked_api_key"


def test_plans_catalog_is_public(client: TestClient) -> None:
    body = client.get("/api/v1/plans").json()

    assert [plan["name"] for plan in body["plans"]] == ["free", "pro", "enterprise"]
    assert body["plans"][1]["price"] == 2980
    assert [pack["credits"] for pack in body["packs"]] == [100, 500, 2000]


def test_unknown_scope_is_422_not_403(client: TestClient, settings: Settings) -> None:
    _, user = create_account_key(settings, "ann@example.com")

    response = client.post(
        "/api/v1/keys", json={"name": "x", "scopes": ["bogus"]}, headers=bearer(user)
    )

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_scope"
    assert "'bogus'" in response.json()["detail"]
