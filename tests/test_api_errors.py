"""Bad input: every case returns RFC 9457 problem+json with a stable code, never a 500."""

from __future__ import annotations

import json

import pytest
from conftest import create_key, services_of
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.accounts.keys import KeyMode, Scope, format_key
from app.settings import Settings
from app.storage.tables import Generation

GENERATIONS = "/api/v1/images/generations"

BAD_BODIES = [
    ({"prompt": ""}, "validation_error", "prompt"),
    ({"prompt": "   \n\t"}, "validation_error", "prompt"),
    ({"prompt": "x" * 4001}, "validation_error", "prompt"),
    ({}, "validation_error", "prompt"),
    ({"prompt": 12}, "validation_error", "prompt"),
    ({"prompt": "cat", "n": 0}, "validation_error", "n"),
    ({"prompt": "cat", "n": 5}, "validation_error", "n"),
    ({"prompt": "cat", "n": "two"}, "validation_error", "n"),
    ({"prompt": "cat", "size": "512x512"}, "validation_error", "size"),
    ({"prompt": "cat", "aspect_ratio": "5:4"}, "validation_error", "aspect_ratio"),
    ({"prompt": "cat", "style": "cubism"}, "validation_error", "style"),
    ({"prompt": "cat", "image_size": "8K"}, "validation_error", "image_size"),
    ({"prompt": "cat", "response_format": "jpeg"}, "validation_error", "response_format"),
    ({"prompt": "cat", "seed": -1}, "validation_error", "seed"),
    (
        {"prompt": "cat", "size": "1024x1024", "aspect_ratio": "16:9"},
        "validation_error",
        "aspect_ratio",
    ),
    ({"prompt": "cat", "quality": "hd"}, "validation_error", "quality"),
    ({"prompt": "cat", "model": "gpt-image-1"}, "unknown_model", "model"),
]


def _assert_problem(response_status: int, body: dict[str, object], status: int, code: str) -> None:
    assert response_status == status
    assert body["status"] == status
    assert body["code"] == code
    assert str(body["type"]).endswith(f"/docs/errors#{code}")
    assert body["title"]
    assert body["detail"]
    assert str(body["request_id"]).startswith("req_")
    assert body["error"]["code"] == code  # type: ignore[index]
    assert body["error"]["message"] == body["detail"]  # type: ignore[index]


@pytest.mark.parametrize(("body", "code", "field"), BAD_BODIES)
def test_bad_generation_body_is_422(
    client: TestClient, auth: dict[str, str], body: dict[str, object], code: str, field: str
) -> None:
    response = client.post(GENERATIONS, json=body, headers=auth)
    problem = response.json()

    assert response.headers["content-type"] == "application/problem+json"
    _assert_problem(response.status_code, problem, 422, code)
    assert problem["error"]["param"] == field
    if code == "validation_error":
        assert problem["errors"][0]["field"] == field


def test_detail_names_the_value_and_the_choices(client: TestClient, auth: dict[str, str]) -> None:
    ratio = client.post(
        GENERATIONS, json={"prompt": "c", "aspect_ratio": "5:4"}, headers=auth
    ).json()
    model = client.post(
        GENERATIONS, json={"prompt": "c", "model": "gpt-image-1"}, headers=auth
    ).json()
    disagree = client.post(
        GENERATIONS, json={"prompt": "c", "size": "1024x1024", "aspect_ratio": "16:9"}, headers=auth
    ).json()

    assert "'5:4'" in ratio["detail"]
    assert "16:9" in ratio["detail"]
    assert "gpt-image-1" in model["detail"]
    assert "GET /api/v1/models" in model["detail"]
    assert model["models"] == ["demo"]
    assert "1:1" in disagree["detail"]
    assert "16:9" in disagree["detail"]


def test_non_json_body_is_400(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post(
        GENERATIONS,
        content=b'{"prompt": "cat",',
        headers={**auth, "Content-Type": "application/json"},
    )

    _assert_problem(response.status_code, response.json(), 400, "invalid_json")
    assert "at character 17" in response.json()["detail"]


def test_second_bad_field_is_counted(client: TestClient, auth: dict[str, str]) -> None:
    body = {"prompt": "cat", "n": 0, "seed": -1}
    detail = client.post(GENERATIONS, json=body, headers=auth).json()["detail"]

    assert detail.endswith("(1 more problem in `errors`)")


def test_wrong_content_type_is_415(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post(
        GENERATIONS,
        content=json.dumps({"prompt": "cat"}),
        headers={**auth, "Content-Type": "text/plain"},
    )

    _assert_problem(response.status_code, response.json(), 415, "unsupported_media_type")
    assert "text/plain" in response.json()["detail"]


def test_body_over_limit_is_413(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    body = json.dumps({"prompt": "x" * (settings.max_request_bytes + 10)})
    response = client.post(
        GENERATIONS, content=body, headers={**auth, "Content-Type": "application/json"}
    )

    _assert_problem(response.status_code, response.json(), 413, "request_too_large")


def test_chunked_body_over_limit_is_413(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"prompt": "'
        for _ in range(settings.max_request_bytes // 1000 + 2):
            yield b"y" * 1000
        yield b'"}'

    response = client.post(
        GENERATIONS, content=chunks(), headers={**auth, "Content-Type": "application/json"}
    )

    _assert_problem(response.status_code, response.json(), 413, "request_too_large")


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_api_key"),
        ("Basic dXNlcjpwYXNz", "malformed_authorization"),
        ("Bearer not-a-key", "malformed_api_key"),
        ("Bearer " + format_key(KeyMode.LIVE, "A" * 16, "B" * 32)[:-1] + "x", "malformed_api_key"),
        ("Bearer " + format_key(KeyMode.LIVE, "A" * 16, "B" * 32), "invalid_api_key"),
    ],
)
def test_bad_credentials_are_401(client: TestClient, header: str | None, code: str) -> None:
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/images", headers=headers)

    _assert_problem(response.status_code, response.json(), 401, code)
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_messages_differ_per_credential_problem(client: TestClient) -> None:
    details = {
        client.get("/api/v1/images", headers=headers).json()["detail"]
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": "Bearer " + format_key(KeyMode.LIVE, "A" * 16, "B" * 32)},
        )
    }

    assert len(details) == 3


def test_revoked_key_is_401(client: TestClient, settings: Settings, auth: dict[str, str]) -> None:
    services = services_of(client.app)  # type: ignore[arg-type]
    key_id = auth["Authorization"].removeprefix("Bearer vc_live_")[:16]
    client.portal.call(services.keys.revoke, key_id)  # type: ignore[union-attr]
    response = client.get("/api/v1/images", headers=auth)

    _assert_problem(response.status_code, response.json(), 401, "revoked_api_key")
    assert key_id in response.json()["detail"]


def test_key_without_scope_is_403(client: TestClient, settings: Settings) -> None:
    reader = create_key(settings, scopes=[Scope.IMAGES_READ.value])
    response = client.post(
        GENERATIONS, json={"prompt": "cat"}, headers={"Authorization": f"Bearer {reader}"}
    )

    _assert_problem(response.status_code, response.json(), 403, "missing_scope")
    assert response.json()["missing_scope"] == "images:generate"


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "limit"), ({"limit": 1000}, "limit"), ({"cursor": "img_bad"}, "cursor")],
)
def test_bad_listing_parameters_are_422(
    client: TestClient, auth: dict[str, str], params: dict[str, object], field: str
) -> None:
    response = client.get("/api/v1/images", params=params, headers=auth)

    assert response.status_code == 422
    assert response.json()["error"]["param"] == field


def test_unknown_route_and_method(client: TestClient, auth: dict[str, str]) -> None:
    missing = client.get("/api/v1/nothing-here", headers=auth)
    wrong_method = client.put(GENERATIONS, json={}, headers=auth)

    _assert_problem(missing.status_code, missing.json(), 404, "route_not_found")
    _assert_problem(wrong_method.status_code, wrong_method.json(), 405, "method_not_allowed")


def test_unknown_image_id_is_404(client: TestClient, auth: dict[str, str]) -> None:
    for image_id in ("img_01M91BYEA0CCCAK7TRYNTPM3AK", "../../etc/passwd", "x" * 300):
        response = client.get(f"/api/v1/images/{image_id}", headers=auth)
        assert response.status_code == 404, image_id


def test_rejected_requests_write_no_record(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    for body, _code, _field in BAD_BODIES:
        client.post(GENERATIONS, json=body, headers=auth)
    client.post(GENERATIONS, content=b"{", headers={**auth, "Content-Type": "application/json"})

    async def count_generations() -> int:
        async with services_of(client.app).sessions() as session:  # type: ignore[arg-type]
            return int(await session.scalar(select(func.count()).select_from(Generation)) or 0)

    assert client.portal.call(count_generations) == 0  # type: ignore[union-attr]
    images_dir = settings.data_dir / "images"
    assert not images_dir.exists() or not any(images_dir.rglob("*.png"))


def test_idempotency_key_too_long_is_422(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post(
        GENERATIONS, json={"prompt": "cat"}, headers={**auth, "Idempotency-Key": "k" * 300}
    )

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_idempotency_key"


def test_get_on_generations_is_405(client: TestClient, auth: dict[str, str]) -> None:
    response = client.get(GENERATIONS, headers=auth)

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"
    assert response.json()["detail"].endswith("Use POST.")


def test_unknown_field_lists_accepted_fields(client: TestClient, auth: dict[str, str]) -> None:
    detail = client.post(GENERATIONS, json={"prompt": "c", "quality": "hd"}, headers=auth).json()[
        "detail"
    ]

    assert "`quality` is not a field of this request" in detail
    assert "aspect_ratio" in detail
    assert "negative_prompt" in detail


def test_out_of_range_value_is_shown(client: TestClient, auth: dict[str, str]) -> None:
    detail = client.post(GENERATIONS, json={"prompt": "c", "n": 1000}, headers=auth).json()[
        "detail"
    ]

    assert "(got 1000)" in detail


def test_empty_body_says_what_to_send(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post(
        GENERATIONS, content=b"", headers={**auth, "Content-Type": "application/json"}
    )

    assert response.status_code == 422
    assert "send a JSON object with at least `prompt`" in response.json()["detail"]


def test_missing_field_is_named(client: TestClient, auth: dict[str, str]) -> None:
    detail = client.post(GENERATIONS, json={"n": 1}, headers=auth).json()["detail"]

    assert detail == "Invalid `prompt`: `prompt` is required"


def test_body_that_is_not_utf8_is_400(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post(
        GENERATIONS,
        content=b'{"prompt": "\xff\xfe"}',
        headers={**auth, "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"
    assert "UTF-8" in response.json()["detail"]


def test_missing_content_type_is_named(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post(GENERATIONS, content=b'{"prompt": "c"}', headers=auth)

    assert response.status_code == 415
    assert "no Content-Type header" in response.json()["detail"]
