"""Generation outcomes through the API with the gemini backend talking to a fake Gemini API.

The real google-genai SDK sends every call to the fake on 127.0.0.1 (GOOGLE_GEMINI_BASE_URL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import LiveServer, create_key, free_port, make_settings, services_of
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.accounts.keys import KeyMode
from app.settings import Settings
from app.storage.tables import Generation, Image
from fakes.gemini_api import (
    TEST_API_KEY,
    FakeGeminiAPI,
    ImageReply,
    blocked_image,
    blocked_prompt,
    model_not_found,
    rate_limited,
    server_error,
    unauthenticated,
)

GENERATIONS = "/api/v1/images/generations"


@pytest.fixture
def gemini_env(fake_gemini: FakeGeminiAPI, monkeypatch: pytest.MonkeyPatch) -> FakeGeminiAPI:
    for variable in ("GEMINI_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_ENTERPRISE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.base_url)
    return fake_gemini


@pytest.fixture
def gemini_settings(tmp_path: Path, gemini_env: FakeGeminiAPI) -> Settings:
    return make_settings(tmp_path, image_backend="gemini", backend_timeout_s=2.0)


@pytest.fixture
def gemini_client(gemini_settings: Settings) -> Iterator[TestClient]:
    from app.main import create_app

    with TestClient(create_app(gemini_settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def gemini_auth(gemini_client: TestClient, gemini_settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(gemini_settings)}"}


def _stored(client: TestClient) -> tuple[int, int, list[str]]:
    """Return (generations, images, statuses) stored so far."""

    async def count() -> tuple[int, int, list[str]]:
        async with services_of(client.app).sessions() as session:  # type: ignore[arg-type]
            generations = int(
                await session.scalar(select(func.count()).select_from(Generation)) or 0
            )
            images = int(await session.scalar(select(func.count()).select_from(Image)) or 0)
            statuses = list((await session.scalars(select(Generation.status))).all())
        return generations, images, statuses

    return client.portal.call(count)  # type: ignore[union-attr]


def test_gemini_generation_succeeds(
    gemini_client: TestClient, gemini_auth: dict[str, str], gemini_env: FakeGeminiAPI
) -> None:
    response = gemini_client.post(
        GENERATIONS,
        json={"prompt": "a koi pond", "n": 2, "aspect_ratio": "3:4", "negative_prompt": "people"},
        headers=gemini_auth,
    )
    body = response.json()

    assert response.status_code == 200, body
    assert body["backend"] == "gemini"
    assert body["model"] == "gemini-3.1-flash-image"
    assert [(item["width"], item["height"]) for item in body["data"]] == [(864, 1184)] * 2
    assert body["usage"]["input_tokens"] == 28
    assert len(gemini_env.requests) == 2
    assert "Avoid: people." in gemini_env.requests[0].prompt
    assert gemini_env.requests[0].generation_config["imageConfig"]["aspectRatio"] == "3:4"


def test_models_list_gemini_models(gemini_client: TestClient, gemini_auth: dict[str, str]) -> None:
    ids = [
        model["id"]
        for model in gemini_client.get("/api/v1/models", headers=gemini_auth).json()["data"]
    ]

    assert ids[0] == "gemini-3.1-flash-image"
    assert "gemini-3-pro-image" in ids
    assert "demo" not in ids


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        (blocked_prompt("PROHIBITED_CONTENT"), 422, "content_policy_violation"),
        (blocked_image("IMAGE_SAFETY"), 422, "content_policy_violation"),
        (rate_limited("47s"), 429, "backend_rate_limited"),
        (unauthenticated(), 503, "backend_unavailable"),
        (model_not_found("gemini-3.1-flash-image"), 503, "backend_unavailable"),
        (server_error(), 502, "backend_error"),
        (ImageReply(delay_s=10), 504, "backend_timeout"),
    ],
)
def test_upstream_outcome_maps_to_status(
    gemini_client: TestClient,
    gemini_auth: dict[str, str],
    gemini_env: FakeGeminiAPI,
    reply: object,
    status: int,
    code: str,
) -> None:
    gemini_env.default_reply = reply  # type: ignore[assignment]
    response = gemini_client.post(GENERATIONS, json={"prompt": "a koi pond"}, headers=gemini_auth)
    body = response.json()

    assert response.status_code == status, body
    assert body["code"] == code
    assert response.headers["content-type"] == "application/problem+json"
    assert TEST_API_KEY not in response.text
    generations, images, statuses = _stored(gemini_client)
    assert images == 0
    assert generations == 1
    assert statuses == ["failed"]


def test_blocked_prompt_names_stage_and_reason(
    gemini_client: TestClient, gemini_auth: dict[str, str], gemini_env: FakeGeminiAPI
) -> None:
    gemini_env.default_reply = blocked_prompt("SAFETY")
    prompt_body = gemini_client.post(GENERATIONS, json={"prompt": "x"}, headers=gemini_auth).json()
    gemini_env.default_reply = blocked_image("IMAGE_PROHIBITED_CONTENT")
    image_body = gemini_client.post(GENERATIONS, json={"prompt": "x"}, headers=gemini_auth).json()

    assert prompt_body["stage"] == "input"
    assert prompt_body["reason"] == "SAFETY"
    assert image_body["stage"] == "output"
    assert image_body["reason"] == "IMAGE_PROHIBITED_CONTENT"


def test_rate_limit_carries_retry_after(
    gemini_client: TestClient, gemini_auth: dict[str, str], gemini_env: FakeGeminiAPI
) -> None:
    gemini_env.default_reply = rate_limited("47s")
    response = gemini_client.post(GENERATIONS, json={"prompt": "x"}, headers=gemini_auth)

    assert response.headers["retry-after"] == "47"
    assert response.json()["retry_after_s"] == 47


def test_unavailable_detail_names_the_setting(
    gemini_client: TestClient, gemini_auth: dict[str, str], gemini_env: FakeGeminiAPI
) -> None:
    gemini_env.default_reply = model_not_found("gemini-3.1-flash-image")
    response = gemini_client.post(GENERATIONS, json={"prompt": "x"}, headers=gemini_auth)

    assert "VISIONCRAFT_GEMINI_MODEL" in response.json()["detail"]


def test_one_failed_call_of_three_stores_nothing(
    gemini_client: TestClient, gemini_auth: dict[str, str], gemini_env: FakeGeminiAPI
) -> None:
    gemini_env.enqueue(ImageReply(), server_error(), ImageReply())
    response = gemini_client.post(GENERATIONS, json={"prompt": "x", "n": 3}, headers=gemini_auth)

    assert response.status_code == 502
    assert _stored(gemini_client)[1] == 0
    assert not list((gemini_client.app.state.services.settings.data_dir / "images").rglob("*.png"))  # type: ignore[attr-defined]


def test_test_key_never_calls_gemini(
    gemini_client: TestClient, gemini_settings: Settings, gemini_env: FakeGeminiAPI
) -> None:
    test_key = create_key(gemini_settings, mode=KeyMode.TEST)
    response = gemini_client.post(
        GENERATIONS, json={"prompt": "x"}, headers={"Authorization": f"Bearer {test_key}"}
    )

    assert response.status_code == 200
    assert response.json()["backend"] == "demo"
    assert gemini_env.requests == []


def test_failed_generation_frees_idempotency_key(
    gemini_client: TestClient, gemini_auth: dict[str, str], gemini_env: FakeGeminiAPI
) -> None:
    headers = {**gemini_auth, "Idempotency-Key": "retry-me"}
    gemini_env.enqueue(server_error())
    failed = gemini_client.post(GENERATIONS, json={"prompt": "x"}, headers=headers)
    retried = gemini_client.post(GENERATIONS, json={"prompt": "x"}, headers=headers)

    assert failed.status_code == 502
    assert retried.status_code == 200
    assert len(gemini_env.requests) == 2


def test_running_idempotency_key_is_409(tmp_path: Path, gemini_env: FakeGeminiAPI) -> None:
    gemini_env.default_reply = ImageReply(delay_s=1.5)
    settings = make_settings(tmp_path, image_backend="gemini", port=free_port())
    with LiveServer(settings) as server:
        headers = {"Authorization": f"Bearer {create_key(settings)}", "Idempotency-Key": "slow"}
        url = f"{server.base_url}{GENERATIONS}"
        first: list[httpx.Response] = []
        thread = threading.Thread(
            target=lambda: first.append(
                httpx.post(url, json={"prompt": "x"}, headers=headers, timeout=30)
            )
        )
        thread.start()
        assert gemini_env.wait_until(lambda: len(gemini_env.requests) == 1, timeout_s=10)
        second = httpx.post(url, json={"prompt": "x"}, headers=headers, timeout=30)
        thread.join(timeout=30)

    assert second.status_code == 409
    assert second.json()["code"] == "idempotency_key_in_use"
    assert first[0].status_code == 200


def test_disconnected_client_still_gets_its_image_stored(
    tmp_path: Path, gemini_env: FakeGeminiAPI
) -> None:
    gemini_env.default_reply = ImageReply(delay_s=1.0)
    settings = make_settings(tmp_path, image_backend="gemini", port=free_port())
    with LiveServer(settings) as server:
        auth = {"Authorization": f"Bearer {create_key(settings)}"}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{server.base_url}{GENERATIONS}",
                json={"prompt": "x"},
                headers={**auth, "Idempotency-Key": "gone"},
                timeout=0.3,
            )
        deadline = time.monotonic() + 20
        listed: list[object] = []
        while not listed and time.monotonic() < deadline:
            listed = httpx.get(f"{server.base_url}/api/v1/images", headers=auth, timeout=10).json()[
                "data"
            ]
            time.sleep(0.1)
        retried = httpx.post(
            f"{server.base_url}{GENERATIONS}",
            json={"prompt": "x"},
            headers={**auth, "Idempotency-Key": "gone"},
            timeout=30,
        )

    assert len(listed) == 1
    assert retried.status_code == 200
    assert retried.headers["idempotent-replayed"] == "true"
    assert retried.json()["data"][0]["id"] == listed[0]["id"]  # type: ignore[index]
    assert len(gemini_env.requests) == 1
