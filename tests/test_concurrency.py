"""Credits and limits under load, through real HTTP at a running server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import (
    LiveServer,
    add_plan,
    bearer,
    create_account_key,
    free_port,
    ledger_and_balance,
    make_settings,
    unique_redis_prefix,
)

from fakes.gemini_api import TEST_API_KEY, FakeGeminiAPI, ImageReply

GENERATIONS = "/api/v1/images/generations"
CREDITS = 10  # the balance, in 1K images
REQUESTS = 5 * CREDITS


async def _fire(base_url: str, token: str, count: int, body: dict[str, object]) -> list[int]:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        responses = await asyncio.gather(
            *(client.post(GENERATIONS, json=body, headers=bearer(token)) for _ in range(count))
        )
    return [response.status_code for response in responses]


def test_parallel_generations_spend_exactly_the_balance(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url=database_url, port=free_port())
    with LiveServer(settings) as server:
        add_plan(settings, "bulk", monthly_credits=0)  # every limit 0: only credits bind
        account_id, token = create_account_key(
            settings, "bulk@example.com", plan="bulk", purchased_credits=CREDITS
        )

        statuses = asyncio.run(_fire(server.base_url, token, REQUESTS, {"prompt": "a kite"}))
        (allowance_sum, purchased_sum), total = ledger_and_balance(settings, account_id)

    assert Counter(statuses) == {200: CREDITS, 402: REQUESTS - CREDITS}
    assert total == 0
    assert (allowance_sum, purchased_sum) == (0, 0)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def limit_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    if request.param == "memory":
        return {}
    return {
        "redis_url": request.getfixturevalue("redis_url"),
        "redis_key_prefix": unique_redis_prefix(),
    }


def test_burst_gets_429_and_retry_after_works(
    tmp_path: Path, limit_settings: dict[str, object]
) -> None:
    settings = make_settings(tmp_path, port=free_port(), **limit_settings)
    with LiveServer(settings) as server:
        add_plan(settings, "sixty", requests_per_minute=60)
        _, token = create_account_key(settings, "burst@example.com", plan="sixty")
        with httpx.Client(base_url=server.base_url, headers=bearer(token), timeout=30) as client:
            # GCRA refills one request per second during the burst, so a slow burst may pass
            # a few more than 60 before the first 429.
            accepted = 0
            while (refused := client.get("/api/v1/account")).status_code == 200 and accepted < 200:
                accepted += 1
            time.sleep(float(refused.headers["retry-after"]))
            honoured = client.get("/api/v1/account")

    assert accepted >= 60
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limit_exceeded"
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert honoured.status_code == 200


def test_concurrent_generations_are_capped(
    tmp_path: Path, fake_gemini: FakeGeminiAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.base_url)
    fake_gemini.default_reply = ImageReply(delay_s=2.0)
    settings = make_settings(tmp_path, port=free_port(), image_backend="gemini")
    with LiveServer(settings) as server:
        add_plan(settings, "single", concurrent_generations=1, monthly_credits=10)
        _, token = create_account_key(settings, "single@example.com", plan="single")
        statuses = asyncio.run(_fire(server.base_url, token, 3, {"prompt": "a kite"}))
        after = asyncio.run(_fire(server.base_url, token, 1, {"prompt": "a kite"}))

    assert sorted(statuses) == [200, 429, 429]
    assert after == [200]
