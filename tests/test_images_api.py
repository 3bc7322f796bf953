"""The image API end to end on the embedded default: generate, fetch, list, delete."""

from __future__ import annotations

import base64
import io
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import create_key
from fastapi.testclient import TestClient
from PIL import Image as PILImage

from app.generation.options import PIXELS_AT_1K
from app.settings import Settings

GENERATIONS = "/api/v1/images/generations"


def _generate(client: TestClient, auth: dict[str, str], **body: object) -> dict[str, object]:
    response = client.post(
        GENERATIONS, json={"prompt": "a lighthouse at dusk", **body}, headers=auth
    )
    assert response.status_code == 200, response.text
    payload: dict[str, object] = response.json()
    return payload


def _path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


@pytest.mark.parametrize("aspect_ratio", list(PIXELS_AT_1K))
def test_generate_returns_png_of_requested_ratio(
    client: TestClient, auth: dict[str, str], aspect_ratio: str
) -> None:
    payload = _generate(client, auth, aspect_ratio=aspect_ratio)
    item = payload["data"][0]  # type: ignore[index]
    content = client.get(_path_and_query(item["url"]))

    assert content.status_code == 200
    assert content.headers["content-type"] == "image/png"
    image = PILImage.open(io.BytesIO(content.content))
    assert image.format == "PNG"
    assert image.size == PIXELS_AT_1K[aspect_ratio]
    assert (item["width"], item["height"]) == PIXELS_AT_1K[aspect_ratio]


def test_generate_answers_in_openai_shape_with_our_fields(
    client: TestClient, auth: dict[str, str]
) -> None:
    payload = _generate(client, auth, n=2, seed=41, style="watercolor")

    assert set(payload) == {"created", "id", "backend", "model", "data", "usage"}
    assert str(payload["id"]).startswith("gen_")
    assert payload["backend"] == "demo"
    assert payload["model"] == "demo"
    assert abs(int(payload["created"]) - time.time()) < 60  # type: ignore[call-overload]
    data = payload["data"]
    assert [item["seed"] for item in data] == [41, 42]  # type: ignore[union-attr]
    assert all(item["id"].startswith("img_") for item in data)  # type: ignore[union-attr]
    assert all("b64_json" not in item for item in data)  # type: ignore[union-attr]
    assert "watercolour" in data[0]["revised_prompt"]  # type: ignore[index]
    assert payload["usage"]["images"] == 2  # type: ignore[index]


def test_openai_size_maps_to_ratio(client: TestClient, auth: dict[str, str]) -> None:
    payload = _generate(client, auth, size="1536x1024")
    item = payload["data"][0]  # type: ignore[index]

    assert (item["width"], item["height"]) == PIXELS_AT_1K["3:2"]


def test_b64_json_carries_the_png(client: TestClient, auth: dict[str, str]) -> None:
    payload = _generate(client, auth, response_format="b64_json", aspect_ratio="16:9")
    item = payload["data"][0]  # type: ignore[index]
    image = PILImage.open(io.BytesIO(base64.b64decode(item["b64_json"])))

    assert "url" not in item
    assert image.size == (1344, 768)


def test_signed_url_works_without_key_and_caches(client: TestClient, auth: dict[str, str]) -> None:
    url = _path_and_query(_generate(client, auth)["data"][0]["url"])  # type: ignore[index]
    first = client.get(url)
    again = client.get(url, headers={"If-None-Match": first.headers["etag"]})

    assert first.status_code == 200
    assert first.headers["content-length"] == str(len(first.content))
    assert first.headers["etag"].startswith('"')
    assert "max-age" in first.headers["cache-control"]
    assert again.status_code == 304
    assert again.content == b""


def test_tampered_or_expired_signature_is_401(client: TestClient, auth: dict[str, str]) -> None:
    url = _generate(client, auth)["data"][0]["url"]  # type: ignore[index]
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    image_path = parts.path
    tampered = client.get(
        f"{image_path}?expires={query['expires'][0]}&signature=AAAA{query['signature'][0][4:]}"
    )
    expired = client.get(
        f"{image_path}?expires={int(time.time()) - 10}&signature={query['signature'][0]}"
    )

    assert tampered.status_code == 401
    assert tampered.json()["code"] == "invalid_image_signature"
    assert expired.status_code == 401
    assert expired.headers["content-type"] == "application/problem+json"


def test_content_with_api_key_and_without_credentials(
    client: TestClient, auth: dict[str, str]
) -> None:
    image_id = _generate(client, auth)["data"][0]["id"]  # type: ignore[index]

    with_key = client.get(f"/api/v1/images/{image_id}/content", headers=auth)
    anonymous = client.get(f"/api/v1/images/{image_id}/content")

    assert with_key.status_code == 200
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "missing_api_key"


def test_history_lists_newest_first_with_cursor(client: TestClient, auth: dict[str, str]) -> None:
    ids = [_generate(client, auth)["data"][0]["id"] for _ in range(5)]  # type: ignore[index]
    first = client.get("/api/v1/images", params={"limit": 2}, headers=auth).json()
    second = client.get(
        "/api/v1/images", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth
    ).json()
    last = client.get(
        "/api/v1/images", params={"limit": 2, "cursor": second["next_cursor"]}, headers=auth
    ).json()

    listed = [item["id"] for page in (first, second, last) for item in page["data"]]
    assert listed == list(reversed(ids))
    assert first["has_more"] is True
    assert last["has_more"] is False
    assert last["next_cursor"] is None


def test_metadata_and_delete(client: TestClient, auth: dict[str, str]) -> None:
    image_id = _generate(client, auth, aspect_ratio="4:3")["data"][0]["id"]  # type: ignore[index]
    metadata = client.get(f"/api/v1/images/{image_id}", headers=auth)
    deleted = client.delete(f"/api/v1/images/{image_id}", headers=auth)
    after = client.get(f"/api/v1/images/{image_id}", headers=auth)

    assert metadata.status_code == 200
    assert metadata.json()["width"] == 1184
    assert metadata.json()["content_type"] == "image/png"
    assert deleted.status_code == 204
    assert after.status_code == 404
    assert after.json()["code"] == "image_not_found"


def test_other_accounts_images_are_not_found(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    image_id = _generate(client, auth)["data"][0]["id"]  # type: ignore[index]
    stranger = {
        "Authorization": f"Bearer {create_key(settings, account_email='stranger@example.com')}"
    }

    assert client.get(f"/api/v1/images/{image_id}", headers=stranger).status_code == 404
    assert client.get(f"/api/v1/images/{image_id}/content", headers=stranger).status_code == 404
    assert client.delete(f"/api/v1/images/{image_id}", headers=stranger).status_code == 404
    assert client.get("/api/v1/images", headers=stranger).json()["data"] == []
    assert client.get(f"/api/v1/images/{image_id}", headers=auth).status_code == 200


def test_models_lists_demo_on_embedded_default(client: TestClient, auth: dict[str, str]) -> None:
    body = client.get("/api/v1/models", headers=auth).json()

    assert body["object"] == "list"
    assert [model["id"] for model in body["data"]] == ["demo"]
    assert body["data"][0]["image_sizes"] == ["1K", "2K", "4K"]


def test_image_size_2k_doubles_pixels(client: TestClient, auth: dict[str, str]) -> None:
    item = _generate(client, auth, aspect_ratio="21:9", image_size="2K")["data"][0]  # type: ignore[index]

    assert (item["width"], item["height"]) == (3072, 1344)


def test_test_key_uses_demo_backend(client: TestClient, settings: Settings) -> None:
    from app.accounts.keys import KeyMode

    test_key = create_key(settings, mode=KeyMode.TEST)
    response = client.post(
        GENERATIONS, json={"prompt": "a cat"}, headers={"Authorization": f"Bearer {test_key}"}
    )

    assert test_key.startswith("vc_test_")
    assert response.status_code == 200
    assert response.json()["backend"] == "demo"


def test_responses_carry_request_id(client: TestClient, auth: dict[str, str]) -> None:
    response = client.get("/api/v1/images", headers={**auth, "X-Request-ID": "client-chosen-42"})
    generated = client.get("/api/v1/images", headers=auth)

    assert response.headers["x-request-id"] == "client-chosen-42"
    assert generated.headers["x-request-id"].startswith("req_")
