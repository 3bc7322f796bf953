"""Credits around a paid backend: refunds on failure, blocked prompts, the spend cap, metrics.

The gemini backend runs the real google-genai SDK against the fake Gemini API.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import bearer, create_account_key, make_settings
from fastapi.testclient import TestClient
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from app.accounts.keys import KeyMode
from app.accounts.metrics import AccountMetrics, DailySpend, utc_day
from app.main import create_app
from app.settings import Settings
from fakes.gemini_api import TEST_API_KEY, FakeGeminiAPI, blocked_prompt, server_error

GENERATIONS = "/api/v1/images/generations"


class GeminiApp:
    def __init__(self, client: TestClient, settings: Settings, reader: InMemoryMetricReader):
        self.client = client
        self.settings = settings
        self.reader = reader

    def metric_points(self, name: str) -> list[tuple[dict[str, Any], float]]:
        """Return (attributes, value) of every point of the metric called `name`."""
        data = self.reader.get_metrics_data()
        points = []
        for resource_metrics in data.resource_metrics if data else []:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        points += [
                            (dict(point.attributes or {}), point.value)
                            for point in metric.data.data_points  # type: ignore[union-attr]
                        ]
        return points

    def balance(self, token: str) -> dict[str, int]:
        body: dict[str, int] = self.client.get("/api/v1/account", headers=bearer(token)).json()[
            "balance"
        ]
        return body


@contextlib.contextmanager
def gemini_app_with(
    tmp_path: Path, fake: FakeGeminiAPI, monkeypatch: pytest.MonkeyPatch, **overrides: object
) -> Iterator[GeminiApp]:
    monkeypatch.setenv("GOOGLE_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.base_url)
    settings = make_settings(tmp_path, image_backend="gemini", **overrides)
    reader = InMemoryMetricReader()
    app = create_app(settings, metric_readers=[reader])
    with TestClient(app, raise_server_exceptions=False) as client:
        yield GeminiApp(client, settings, reader)


@pytest.fixture
def gemini_app(
    tmp_path: Path, fake_gemini: FakeGeminiAPI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GeminiApp]:
    with gemini_app_with(tmp_path, fake_gemini, monkeypatch, blocked_prompts_per_hour=2) as app:
        yield app


def test_success_charges_and_counts(gemini_app: GeminiApp) -> None:
    _, token = create_account_key(gemini_app.settings, "ann@example.com")

    response = gemini_app.client.post(
        GENERATIONS, json={"prompt": "a kite", "n": 2}, headers=bearer(token)
    )

    assert response.status_code == 200, response.text
    assert response.json()["backend"] == "gemini"
    assert gemini_app.balance(token)["allowance"] == 48
    assert gemini_app.metric_points("visioncraft.credits.reserved") == [({}, 2)]
    assert gemini_app.metric_points("visioncraft.credits.used") == [({}, 2)]
    spend = gemini_app.metric_points("visioncraft.upstream.spend")
    assert [value for _, value in spend] == [pytest.approx(0.14)]


def test_backend_failure_refunds(gemini_app: GeminiApp, fake_gemini: FakeGeminiAPI) -> None:
    _, token = create_account_key(gemini_app.settings, "ann@example.com")
    fake_gemini.enqueue(server_error())

    response = gemini_app.client.post(GENERATIONS, json={"prompt": "a kite"}, headers=bearer(token))

    assert response.status_code == 502
    assert gemini_app.balance(token) == {
        "allowance": 50,
        "purchased": 0,
        "total": 50,
        "reserved": 0,
    }
    assert gemini_app.metric_points("visioncraft.credits.refunded") == [({"reason": "failure"}, 1)]
    assert gemini_app.metric_points("visioncraft.credits.used") == []


def test_blocked_prompts_are_free_then_limited(
    gemini_app: GeminiApp, fake_gemini: FakeGeminiAPI
) -> None:
    _, token = create_account_key(gemini_app.settings, "ann@example.com")
    fake_gemini.reply_when_prompt_contains("forbidden", blocked_prompt())

    statuses = [
        gemini_app.client.post(
            GENERATIONS, json={"prompt": "a forbidden thing"}, headers=bearer(token)
        )
        for _ in range(3)
    ]
    clean = gemini_app.client.post(GENERATIONS, json={"prompt": "a kite"}, headers=bearer(token))

    assert [response.status_code for response in statuses] == [422, 422, 429]
    assert statuses[0].json()["code"] == "content_policy_violation"
    assert statuses[2].json()["code"] == "too_many_blocked_prompts"
    assert 0 < int(statuses[2].headers["retry-after"]) <= 3600
    assert clean.status_code == 429
    assert len(fake_gemini.requests) == 2
    assert gemini_app.balance(token)["total"] == 50
    assert ({"reason": "blocked"}, 2) in gemini_app.metric_points("visioncraft.credits.refunded")
    rejections = gemini_app.metric_points("visioncraft.api.rejections")
    assert rejections == [
        ({"http.response.status_code": 429, "error.code": "too_many_blocked_prompts"}, 2)
    ]


def test_daily_spend_cap_answers_503(
    tmp_path: Path, fake_gemini: FakeGeminiAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One 1K image is estimated at 0.07 USD, so the second one passes a 0.10 USD cap.
    with gemini_app_with(tmp_path, fake_gemini, monkeypatch, daily_spend_cap_usd=0.1) as app:
        _, token = create_account_key(app.settings, "ann@example.com")
        _, test_token = create_account_key(app.settings, "tester@example.com", mode=KeyMode.TEST)
        first = app.client.post(GENERATIONS, json={"prompt": "a kite"}, headers=bearer(token))
        second = app.client.post(GENERATIONS, json={"prompt": "a kite"}, headers=bearer(token))
        demo = app.client.post(GENERATIONS, json={"prompt": "a kite"}, headers=bearer(test_token))
        balance = app.balance(token)
        rejections = app.metric_points("visioncraft.api.rejections")

    assert first.status_code == 200
    assert second.status_code == 503
    assert second.json()["code"] == "capacity_exceeded"
    assert 0 < int(second.headers["retry-after"]) <= 86400
    assert demo.status_code == 200
    assert demo.json()["backend"] == "demo"
    assert len(fake_gemini.requests) == 1
    assert balance["allowance"] == 49
    assert rejections == [
        ({"http.response.status_code": 503, "error.code": "capacity_exceeded"}, 1)
    ]


def test_spend_gauges_report_cap_and_today(
    tmp_path: Path, fake_gemini: FakeGeminiAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two 1K images are estimated at 0.07 USD each.
    with gemini_app_with(tmp_path, fake_gemini, monkeypatch, daily_spend_cap_usd=1.5) as app:
        _, token = create_account_key(app.settings, "ann@example.com")
        response = app.client.post(
            GENERATIONS, json={"prompt": "a kite", "n": 2}, headers=bearer(token)
        )
        cap = app.metric_points("visioncraft.upstream.spend.cap")
        today = app.metric_points("visioncraft.upstream.spend.today")

    assert response.status_code == 200
    assert cap == [({}, 1.5)]
    assert [attributes for attributes, _ in today] == [{}]
    assert today[0][1] == pytest.approx(0.14)


def test_spend_today_absent_without_cap(
    tmp_path: Path, fake_gemini: FakeGeminiAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    with gemini_app_with(tmp_path, fake_gemini, monkeypatch, daily_spend_cap_usd=0) as app:
        _, token = create_account_key(app.settings, "ann@example.com")
        response = app.client.post(GENERATIONS, json={"prompt": "a kite"}, headers=bearer(token))
        cap = app.metric_points("visioncraft.upstream.spend.cap")
        today = app.metric_points("visioncraft.upstream.spend.today")

    assert response.status_code == 200
    assert cap == [({}, 0.0)]
    assert today == []


def _spend_today(reader: InMemoryMetricReader) -> list[float]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point.value
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == "visioncraft.upstream.spend.today"
        for point in metric.data.data_points  # type: ignore[union-attr]
    ]


def test_spend_today_keeps_day_maximum() -> None:
    reader = InMemoryMetricReader()
    metrics = AccountMetrics(MeterProvider(metric_readers=[reader]), daily_spend_cap_usd=10)

    metrics.record_spend_today(DailySpend(day="19990101", usd=3.0))
    past_day = _spend_today(reader)
    metrics.record_spend_today(DailySpend(day=utc_day(), usd=0.5))
    # A limit store that failed open returns 0; the day's total cannot have gone down.
    metrics.record_spend_today(DailySpend(day=utc_day(), usd=0.0))
    metrics.record_spend_today(DailySpend(day="19990101", usd=9.0))
    today = _spend_today(reader)

    assert past_day == [0.0]
    assert today == [0.5]
