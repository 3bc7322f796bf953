"""OpenAI's own Python client, unchanged, against a running server on 127.0.0.1."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from conftest import LiveServer, create_key
from PIL import Image

from app.accounts.keys import Scope


def _client(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.base_url}/api/v1", api_key=key, max_retries=0, timeout=60
    )


def test_generate_with_url(live_server: LiveServer) -> None:
    client = _client(live_server, create_key(live_server.settings))
    result = client.images.generate(prompt="a paper boat on a pond", size="1024x1536", n=2)

    assert result.data is not None and len(result.data) == 2
    content = httpx.get(result.data[0].url or "", timeout=30)
    assert content.status_code == 200
    assert Image.open(io.BytesIO(content.content)).size == (832, 1248)
    assert result.usage is not None


def test_generate_with_b64_json(live_server: LiveServer) -> None:
    client = _client(live_server, create_key(live_server.settings))
    result = client.images.generate(prompt="a paper boat", response_format="b64_json")

    assert result.data is not None
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
    assert image.size == (1024, 1024)


def test_our_fields_pass_through_extra_body(live_server: LiveServer) -> None:
    client = _client(live_server, create_key(live_server.settings))
    result = client.images.generate(
        prompt="a paper boat", extra_body={"aspect_ratio": "21:9", "seed": 9, "style": "anime"}
    )

    extra = result.model_dump()
    assert extra["backend"] == "demo"
    assert extra["data"][0]["seed"] == 9
    assert (extra["data"][0]["width"], extra["data"][0]["height"]) == (1536, 672)


def test_typed_errors(live_server: LiveServer) -> None:
    good = _client(live_server, create_key(live_server.settings))
    reader = _client(
        live_server, create_key(live_server.settings, scopes=[Scope.IMAGES_READ.value])
    )
    bad = _client(live_server, "vc_live_not-a-real-key")

    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        bad.images.generate(prompt="boat")
    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        good.images.generate(prompt="boat", size="512x512")  # type: ignore[arg-type]
    with pytest.raises(openai.UnprocessableEntityError) as unknown_model:
        good.images.generate(prompt="boat", model="dall-e-3")
    with pytest.raises(openai.PermissionDeniedError) as forbidden:
        reader.images.generate(prompt="boat")

    assert unauthenticated.value.code == "malformed_api_key"
    assert invalid.value.code == "validation_error"
    assert invalid.value.param == "size"
    assert "512x512" in invalid.value.message
    assert unknown_model.value.code == "unknown_model"
    assert forbidden.value.code == "missing_scope"
    assert unauthenticated.value.response.headers["x-request-id"].startswith("req_")
