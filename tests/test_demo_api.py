"""The demo generator: no key, demo backend only, limited per client address and per day."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_network
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import make_settings
from fastapi.testclient import TestClient
from starlette.requests import Request

from app.api.clients import client_address
from app.main import create_app
from fakes.gemini_api import TEST_API_KEY, FakeGeminiAPI

DEMO = "/api/v1/demo/generations"


def _client(tmp_path: Path, **overrides: object) -> TestClient:
    return TestClient(
        create_app(make_settings(tmp_path, **overrides)), raise_server_exceptions=False
    )


@pytest.fixture
def demo_client(tmp_path: Path) -> Iterator[TestClient]:
    with _client(tmp_path, demo_requests_per_minute=2, demo_requests_per_day=3) as client:
        yield client


def test_demo_generates_without_key(demo_client: TestClient, auth: dict[str, str]) -> None:
    response = demo_client.post(DEMO, json={"prompt": "a lighthouse", "aspect_ratio": "16:9"})
    body = response.json()
    url = urlsplit(body["data"][0]["url"])
    content = demo_client.get(f"{url.path}?{url.query}")

    assert response.status_code == 200
    assert body["backend"] == "demo"
    assert (body["data"][0]["width"], body["data"][0]["height"]) == (1344, 768)
    assert content.status_code == 200
    assert content.headers["content-type"] == "image/png"
    assert response.headers["ratelimit-policy"] == '"demo";q=2;w=60'


def test_demo_images_stay_out_of_histories(demo_client: TestClient, auth: dict[str, str]) -> None:
    image_id = demo_client.post(DEMO, json={"prompt": "a kite"}).json()["data"][0]["id"]

    assert demo_client.get("/api/v1/images", headers=auth).json()["data"] == []
    assert demo_client.get(f"/api/v1/images/{image_id}", headers=auth).status_code == 404


def test_demo_takes_the_generation_body(demo_client: TestClient) -> None:
    response = demo_client.post(
        DEMO,
        json={"prompt": "a kite", "n": 2, "negative_prompt": "clouds", "response_format": "url"},
    )

    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"prompt": "a kite", "n": 4}, "n", "too_many_images"),
        ({"prompt": "a kite", "image_size": "4K"}, "image_size", "unsupported_image_size"),
        ({"prompt": ""}, "prompt", "validation_error"),
        ({"prompt": "x" * 4001}, "prompt", "validation_error"),
        ({"prompt": "a kite", "aspect_ratio": "5:4"}, "aspect_ratio", "validation_error"),
        ({"prompt": "a kite", "style": "vaporwave"}, "style", "validation_error"),
    ],
)
def test_demo_rejects_bad_input_with_422(
    demo_client: TestClient, body: dict[str, object], field: str, code: str
) -> None:
    response = demo_client.post(DEMO, json=body)

    assert response.status_code == 422
    assert response.json()["code"] == code
    assert response.json()["error"]["param"] == field


def test_demo_limit_per_minute(demo_client: TestClient) -> None:
    statuses = [demo_client.post(DEMO, json={"prompt": "a kite"}) for _ in range(3)]

    assert [response.status_code for response in statuses] == [200, 200, 429]
    assert statuses[2].json()["code"] == "demo_rate_limit_exceeded"
    assert 20 <= int(statuses[2].headers["retry-after"]) <= 30  # one request per 30 s
    policy, remaining, reset = statuses[2].headers["ratelimit"].split(";")
    assert (policy, remaining) == ('"demo"', "r=0")
    assert 50 <= int(reset.removeprefix("t=")) <= 60  # full again a minute after the first


def test_demo_limit_per_day(tmp_path: Path) -> None:
    with _client(tmp_path, demo_requests_per_minute=10, demo_requests_per_day=2) as client:
        statuses = [client.post(DEMO, json={"prompt": "a kite"}) for _ in range(3)]

    assert [response.status_code for response in statuses] == [200, 200, 429]
    assert statuses[2].json()["code"] == "demo_daily_limit_exceeded"
    assert 0 < int(statuses[2].headers["retry-after"]) <= 86400


def test_demo_never_calls_the_paid_backend(
    tmp_path: Path, fake_gemini: FakeGeminiAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.base_url)
    with _client(tmp_path, image_backend="gemini") as client:
        response = client.post(DEMO, json={"prompt": "a kite"})

    assert response.status_code == 200
    assert response.json()["backend"] == "demo"
    assert fake_gemini.requests == []


def _request(peer: str, forwarded: str | None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "client": (peer, 40000), "headers": headers})


PROXIES = [ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", None, "203.0.113.9"),
        ("203.0.113.9", "198.51.100.7", "203.0.113.9"),  # not a trusted proxy: header ignored
        ("10.0.0.2", "198.51.100.7", "198.51.100.7"),
        ("10.0.0.2", "1.2.3.4, 198.51.100.7, 10.0.0.3", "198.51.100.7"),  # rightmost untrusted
        ("10.0.0.2", "10.0.0.4", "10.0.0.2"),  # only proxies: the peer
    ],
)
def test_client_address_believes_only_trusted_proxies(
    peer: str, forwarded: str | None, expected: str
) -> None:
    assert client_address(_request(peer, forwarded), PROXIES) == expected
