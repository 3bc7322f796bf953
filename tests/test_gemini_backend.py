"""Tests of the gemini backend through the real google-genai SDK and a fake Gemini API."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC
from typing import Any

import pytest
from google.genai import types
from PIL import Image

from app.errors import (
    ContentPolicyViolation,
    RateLimitedError,
    ServiceError,
    UpstreamError,
    UpstreamUnavailableError,
)
from app.generation.backend import ImageSpec
from app.generation.gemini import GeminiBackend
from app.generation.options import PIXELS_AT_1K, ImageSize
from fakes.gemini_api import (
    REDACTED,
    TEST_API_KEY,
    FakeGeminiAPI,
    ImageReply,
    JsonReply,
    api_key_invalid,
    blocked_image,
    blocked_prompt,
    model_not_found,
    overloaded,
    permission_denied,
    rate_limited,
    server_error,
    text_only,
    unauthenticated,
    unreadable_image,
)

pytestmark = pytest.mark.anyio

MODEL = "gemini-3.1-flash-image"
PROMPT = "A lighthouse on a cliff at dawn\nAvoid: people, text."
# Variables that the SDK reads. The developer's own values must not reach the tests.
GOOGLE_VARIABLES = (
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_GENAI_USE_ENTERPRISE",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_VERTEX_BASE_URL",
    "GOOGLE_GENAI_API_VERSION",
    "GOOGLE_GENAI_HTTP_CLIENT",
    "GOOGLE_GENAI_CLIENT_MODE",
)


@pytest.fixture(autouse=True)
def clear_google_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in GOOGLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def make_backend(
    fake: FakeGeminiAPI, *, model: str = MODEL, api_key: str | None = TEST_API_KEY
) -> GeminiBackend:
    return GeminiBackend(
        model, http_options=types.HttpOptions(base_url=fake.base_url), api_key=api_key
    )


@pytest.fixture
async def backend(fake_gemini: FakeGeminiAPI) -> AsyncIterator[GeminiBackend]:
    backend = make_backend(fake_gemini)
    yield backend
    await backend.aclose()


def make_spec(**changes: Any) -> ImageSpec:
    spec = ImageSpec(
        prompt=PROMPT,
        model=MODEL,
        aspect_ratio="16:9",
        image_size=ImageSize.K1,
        count=1,
        seed=1234,
    )
    return dataclasses.replace(spec, **changes)


def decoded_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


async def wait_in_thread(
    fake: FakeGeminiAPI, predicate: Callable[[], bool], timeout_s: float = 5.0
) -> bool:
    """Wait for a condition on the fake without blocking the event loop."""
    return await asyncio.to_thread(fake.wait_until, predicate, timeout_s)


async def test_generate_returns_images_of_requested_size(backend: GeminiBackend) -> None:
    result = await backend.generate(make_spec(aspect_ratio="3:2", count=2))

    assert len(result.images) == 2
    for image in result.images:
        assert (image.width, image.height) == PIXELS_AT_1K["3:2"]
        assert decoded_size(image.data) == PIXELS_AT_1K["3:2"]
        assert image.mime_type == "image/png"
    assert [image.seed for image in result.images] == [1234, 1235]


async def test_generate_sums_token_usage(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI
) -> None:
    fake_gemini.enqueue(
        ImageReply(prompt_tokens=10, output_tokens=1000),
        ImageReply(prompt_tokens=11, output_tokens=1100),
        ImageReply(prompt_tokens=12, output_tokens=1200),
    )

    result = await backend.generate(make_spec(count=3))

    assert result.input_tokens == 33
    assert result.output_tokens == 3300


async def test_generate_reads_pixel_size_from_image(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI
) -> None:
    fake_gemini.default_reply = ImageReply(mime_type="image/jpeg")

    result = await backend.generate(make_spec(aspect_ratio="1:1", image_size=ImageSize.K2))

    image = result.images[0]
    assert (image.width, image.height) == (2048, 2048)
    assert image.mime_type == "image/jpeg"
    assert image.data.startswith(b"\xff\xd8")


async def test_generate_skips_thought_images(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI
) -> None:
    fake_gemini.default_reply = ImageReply(thought_image=True)

    result = await backend.generate(make_spec(aspect_ratio="9:16"))

    assert len(result.images) == 1
    assert (result.images[0].width, result.images[0].height) == PIXELS_AT_1K["9:16"]


async def test_generate_sends_image_request(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI
) -> None:
    await backend.generate(make_spec(aspect_ratio="21:9", image_size=ImageSize.K4))

    [request] = fake_gemini.requests
    assert request.method == "POST"
    assert request.path == f"/v1/models/{MODEL}:generateContent"
    assert request.headers["x-goog-api-key"] == REDACTED
    assert request.body == {
        "contents": [{"parts": [{"text": PROMPT}], "role": "user"}],
        "generationConfig": {
            "seed": 1234,
            "responseModalities": ["IMAGE"],
            "imageConfig": {"aspectRatio": "21:9", "imageSize": "4K"},
        },
    }


async def test_generate_sends_requested_model(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI
) -> None:
    await backend.generate(make_spec(model="gemini-3-pro-image"))

    assert [request.model for request in fake_gemini.requests] == ["gemini-3-pro-image"]


async def test_generate_calls_concurrently(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI
) -> None:
    fake_gemini.default_reply = ImageReply(delay_s=0.5)

    result = await backend.generate(make_spec(count=3, seed=70))

    requests = fake_gemini.requests
    assert len(requests) == 3
    last_arrival = max(request.arrived_at for request in requests)
    first_answer = min(request.answered_at or float("inf") for request in requests)
    assert last_arrival < first_answer
    assert sorted(request.generation_config["seed"] for request in requests) == [70, 71, 72]
    assert [image.seed for image in result.images] == [70, 71, 72]


async def test_generate_uses_response_model_version(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI
) -> None:
    fake_gemini.default_reply = ImageReply(model_version="gemini-3.1-flash-image-002")

    result = await backend.generate(make_spec())

    assert result.model == "gemini-3.1-flash-image-002"


async def test_generate_defaults_to_requested_model(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI
) -> None:
    fake_gemini.default_reply = ImageReply(model_version=None)

    result = await backend.generate(make_spec(model="gemini-3.1-flash-lite-image"))

    assert result.model == "gemini-3.1-flash-lite-image"


@pytest.mark.parametrize("reason", ["SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "IMAGE_SAFETY"])
async def test_blocked_prompt_raises_input_violation(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI, reason: str
) -> None:
    fake_gemini.default_reply = blocked_prompt(reason)

    with pytest.raises(ContentPolicyViolation) as caught:
        await backend.generate(make_spec())

    assert caught.value.stage == "input"
    assert caught.value.reason == reason
    assert backend.last_call_outcome == "blocked"


@pytest.mark.parametrize(
    "finish_reason", ["IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_OTHER", "NO_IMAGE"]
)
async def test_blocked_image_raises_output_violation(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI, finish_reason: str
) -> None:
    fake_gemini.default_reply = blocked_image(finish_reason)

    with pytest.raises(ContentPolicyViolation) as caught:
        await backend.generate(make_spec())

    assert caught.value.stage == "output"
    assert caught.value.reason == finish_reason
    assert backend.last_call_outcome == "blocked"


async def test_text_without_image_raises_upstream_error(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI
) -> None:
    fake_gemini.default_reply = text_only("I can only describe this scene in words.")

    with pytest.raises(UpstreamError) as caught:
        await backend.generate(make_spec())

    assert "finish reason STOP" in caught.value.detail


async def test_unreadable_image_raises_upstream_error(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI
) -> None:
    fake_gemini.default_reply = unreadable_image()

    with pytest.raises(UpstreamError) as caught:
        await backend.generate(make_spec())

    assert "could not be decoded" in caught.value.detail


@pytest.mark.parametrize(("retry_delay", "expected_s"), [("47s", 47), ("1.5s", 1.5), (None, 30)])
async def test_rate_limit_raises_with_retry_delay(
    backend: GeminiBackend,
    fake_gemini: FakeGeminiAPI,
    retry_delay: str | None,
    expected_s: float,
) -> None:
    fake_gemini.default_reply = rate_limited(retry_delay)

    with pytest.raises(RateLimitedError) as caught:
        await backend.generate(make_spec())

    assert caught.value.retry_after_s == expected_s
    assert caught.value.instance_code == "backend_rate_limited"
    assert f"Retry after {expected_s:g} seconds" in caught.value.detail
    assert backend.last_call_outcome == "rate_limited"


@pytest.mark.parametrize(("reply", "status"), [(server_error(), 500), (overloaded(), 503)])
async def test_server_error_raises_upstream_error(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI, reply: JsonReply, status: int
) -> None:
    fake_gemini.default_reply = reply

    with pytest.raises(UpstreamError) as caught:
        await backend.generate(make_spec())

    assert f"HTTP {status}" in caught.value.detail
    assert backend.last_call_outcome == "error"


@pytest.mark.parametrize("reply", [unauthenticated(), permission_denied(), api_key_invalid()])
async def test_rejected_credentials_raise_unavailable(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI, reply: JsonReply
) -> None:
    fake_gemini.default_reply = reply

    with pytest.raises(UpstreamUnavailableError) as caught:
        await backend.generate(make_spec())

    assert "GOOGLE_API_KEY" in caught.value.detail
    assert "GEMINI_API_KEY" in caught.value.detail
    assert backend.last_call_outcome == "unavailable"


async def test_wrong_api_key_raises_unavailable(fake_gemini: FakeGeminiAPI) -> None:
    backend = make_backend(fake_gemini, api_key="wrong-key-51c0de")

    with pytest.raises(UpstreamUnavailableError) as caught:
        await backend.generate(make_spec())
    await backend.aclose()

    assert "GOOGLE_API_KEY" in caught.value.detail
    assert "wrong-key-51c0de" not in str(caught.value)


async def test_unknown_configured_model_raises_unavailable(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI
) -> None:
    fake_gemini.default_reply = model_not_found(MODEL)

    with pytest.raises(UpstreamUnavailableError) as caught:
        await backend.generate(make_spec())

    assert "VISIONCRAFT_GEMINI_MODEL" in caught.value.detail
    assert MODEL in caught.value.detail


async def test_unknown_other_model_raises_upstream_error(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI
) -> None:
    fake_gemini.default_reply = model_not_found("gemini-3-pro-image")

    with pytest.raises(UpstreamError) as caught:
        await backend.generate(make_spec(model="gemini-3-pro-image"))

    assert "gemini-3-pro-image" in caught.value.detail
    assert not isinstance(caught.value, UpstreamUnavailableError)


async def test_unreachable_api_raises_upstream_error() -> None:
    with FakeGeminiAPI() as stopped:
        backend = make_backend(stopped)
    # The fake has stopped, so nothing listens on its port any more.

    with pytest.raises(UpstreamError) as caught:
        await backend.generate(make_spec())
    await backend.aclose()

    assert "could not be reached" in caught.value.detail
    assert backend.last_call_outcome == "error"


async def test_timeout_cancels_calls_in_flight(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI
) -> None:
    fake_gemini.default_reply = ImageReply(delay_s=30)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(backend.generate(make_spec(count=2)), timeout=0.5)

    # Cancelled calls close their connections, so the fake's sleeping handlers return at once.
    assert await wait_in_thread(
        fake_gemini,
        lambda: (
            len(fake_gemini.requests) == 2
            and all(request.disconnected_at is not None for request in fake_gemini.requests)
        ),
    )
    assert all(request.answered_at is None for request in fake_gemini.requests)
    assert backend.last_call_outcome == "cancelled"


async def test_failed_call_cancels_the_others(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI
) -> None:
    # The error waits a little, so that all three requests have arrived when it is sent.
    fake_gemini.enqueue(
        dataclasses.replace(server_error(), delay_s=0.3),
        ImageReply(delay_s=30),
        ImageReply(delay_s=30),
    )

    with pytest.raises(UpstreamError):
        await backend.generate(make_spec(count=3))

    requests = fake_gemini.requests
    assert len(requests) == 3
    assert await wait_in_thread(
        fake_gemini,
        lambda: sum(request.disconnected_at is not None for request in requests) == 2,
    )
    assert sum(request.answered_at is not None for request in requests) == 1


async def test_missing_credentials_raise_unavailable_on_generate(
    fake_gemini: FakeGeminiAPI,
) -> None:
    backend = make_backend(fake_gemini, api_key=None)

    with pytest.raises(UpstreamUnavailableError) as caught:
        await backend.generate(make_spec())
    await backend.aclose()

    assert "GOOGLE_API_KEY" in caught.value.detail
    assert fake_gemini.requests == []
    assert backend.last_call_outcome == "unavailable"


@pytest.mark.parametrize("variable", ["GOOGLE_API_KEY", "GEMINI_API_KEY"])
async def test_api_key_from_environment(
    fake_gemini: FakeGeminiAPI, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, TEST_API_KEY)
    backend = make_backend(fake_gemini, api_key=None)

    result = await backend.generate(make_spec())
    await backend.aclose()

    assert len(result.images) == 1


@pytest.mark.parametrize(
    "reply",
    [
        blocked_prompt(),
        blocked_image(),
        text_only("No image."),
        unreadable_image(),
        rate_limited(),
        server_error(),
        unauthenticated(),
        permission_denied(),
        api_key_invalid(),
        model_not_found(MODEL),
    ],
)
async def test_errors_never_contain_api_key(
    backend: GeminiBackend,
    fake_gemini: FakeGeminiAPI,
    caplog: pytest.LogCaptureFixture,
    reply: JsonReply,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_gemini.default_reply = reply

    with pytest.raises(ServiceError) as caught:
        await backend.generate(make_spec())

    assert TEST_API_KEY not in str(caught.value)
    assert TEST_API_KEY not in caught.value.detail
    assert TEST_API_KEY not in repr(caught.value.extra)
    assert TEST_API_KEY not in caplog.text


async def test_generate_after_aclose_builds_new_client(
    backend: GeminiBackend, fake_gemini: FakeGeminiAPI
) -> None:
    await backend.generate(make_spec())
    await backend.aclose()
    await backend.aclose()

    result = await backend.generate(make_spec())

    assert len(result.images) == 1
    assert len(fake_gemini.requests) == 2


async def test_last_call_records_success(backend: GeminiBackend) -> None:
    assert backend.last_call_at is None
    assert backend.last_call_outcome is None

    await backend.generate(make_spec())

    assert backend.last_call_outcome == "success"
    assert backend.last_call_at is not None
    assert backend.last_call_at.tzinfo is UTC


def test_models_lists_configured_model_first() -> None:
    backend = GeminiBackend("gemini-3.1-flash-image-exp")

    models = backend.models()

    assert [model.id for model in models] == [
        "gemini-3.1-flash-image-exp",
        "gemini-3.1-flash-image",
        "gemini-3-pro-image",
        "gemini-3.1-flash-lite-image",
    ]
    assert all(model.backend == "gemini" for model in models)
    assert all(model.image_sizes == (ImageSize.K1, ImageSize.K2, ImageSize.K4) for model in models)


def test_models_lists_current_model_once() -> None:
    backend = GeminiBackend("gemini-3-pro-image")

    assert [model.id for model in backend.models()] == [
        "gemini-3-pro-image",
        "gemini-3.1-flash-image",
        "gemini-3.1-flash-lite-image",
    ]
