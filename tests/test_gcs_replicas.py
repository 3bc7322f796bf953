"""Two running apps with IMAGE_STORE=gcs share one bucket, so every replica serves every image."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from conftest import TEST_BUCKET, LiveServer, create_key, free_port, make_settings
from fastapi.testclient import TestClient

from app.main import create_app
from fakes.gcs_api import FakeCloudStorage

GENERATIONS = "/api/v1/images/generations"


@pytest.fixture
def replicas(
    database_url: str, tmp_path: Path, fake_gcs: FakeCloudStorage
) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two apps with their own data folders, one database and one bucket, as replicas run."""
    shared = {"image_store": "gcs", "gcs_bucket": TEST_BUCKET, "database_url": database_url}
    first_settings = make_settings(tmp_path / "first", port=free_port(), **shared)
    second_settings = make_settings(tmp_path / "second", port=free_port(), **shared)
    with LiveServer(first_settings) as first, LiveServer(second_settings) as second:
        yield first, second


def stored_bytes(fake: FakeCloudStorage, image_id: str) -> bytes:
    """Return the bytes of the one object in the test bucket that belongs to `image_id`."""
    matches = [
        stored.data
        for name, stored in fake.objects(TEST_BUCKET).items()
        if name.endswith(f"/{image_id}.png")
    ]
    assert len(matches) == 1, f"expected one object for {image_id}, found {len(matches)}"
    return matches[0]


def test_replica_serves_image_generated_by_other(
    replicas: tuple[LiveServer, LiveServer], fake_gcs: FakeCloudStorage, tmp_path: Path
) -> None:
    first, second = replicas
    auth = {"Authorization": f"Bearer {create_key(first.settings)}"}

    generated = httpx.post(
        first.base_url + GENERATIONS, json={"prompt": "harbour at dawn", "n": 2}, headers=auth
    )

    assert generated.status_code == 200, generated.text
    images = generated.json()["data"]
    assert len(fake_gcs.objects(TEST_BUCKET)) == 2
    for image in images:
        content = httpx.get(f"{second.base_url}/api/v1/images/{image['id']}/content", headers=auth)
        assert content.status_code == 200
        assert content.headers["content-type"] == "image/png"
        assert content.content == stored_bytes(fake_gcs, image["id"])
    assert not (tmp_path / "first" / "images").exists()
    assert not (tmp_path / "second" / "images").exists()


def test_signed_url_of_one_replica_works_on_other(
    replicas: tuple[LiveServer, LiveServer], fake_gcs: FakeCloudStorage
) -> None:
    first, second = replicas
    auth = {"Authorization": f"Bearer {create_key(first.settings)}"}
    generated = httpx.post(first.base_url + GENERATIONS, json={"prompt": "kite"}, headers=auth)
    image = generated.json()["data"][0]

    signed = httpx.get(image["url"].replace(first.base_url, second.base_url))

    assert signed.status_code == 200
    assert signed.content == stored_bytes(fake_gcs, image["id"])


def test_delete_on_one_replica_removes_for_all(
    replicas: tuple[LiveServer, LiveServer], fake_gcs: FakeCloudStorage
) -> None:
    first, second = replicas
    auth = {"Authorization": f"Bearer {create_key(first.settings)}"}
    generated = httpx.post(first.base_url + GENERATIONS, json={"prompt": "lantern"}, headers=auth)
    image_id = generated.json()["data"][0]["id"]

    deleted = httpx.delete(f"{second.base_url}/api/v1/images/{image_id}", headers=auth)

    assert deleted.status_code == 204
    assert fake_gcs.objects(TEST_BUCKET) == {}
    content = httpx.get(f"{first.base_url}/api/v1/images/{image_id}/content", headers=auth)
    assert content.status_code == 404
    assert content.json()["code"] == "image_not_found"


def test_b64_json_reads_from_bucket(
    replicas: tuple[LiveServer, LiveServer], fake_gcs: FakeCloudStorage
) -> None:
    first, _second = replicas
    auth = {"Authorization": f"Bearer {create_key(first.settings)}"}

    generated = httpx.post(
        first.base_url + GENERATIONS,
        json={"prompt": "origami crane", "response_format": "b64_json"},
        headers=auth,
    )

    assert generated.status_code == 200
    # The image store's health check reads its own objects under health/ besides the image.
    image_downloads = [
        request.status
        for request in fake_gcs.requests_of("download")
        if not unquote(request.path).partition("/o/")[2].startswith("health/")
    ]
    assert image_downloads == [200]


def test_missing_bucket_is_logged_and_answered_503(
    tmp_path: Path, fake_gcs: FakeCloudStorage, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, image_store="gcs", gcs_bucket="no-such-bucket")
    caplog.set_level(logging.ERROR, logger="app.startup")

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        auth = {"Authorization": f"Bearer {create_key(settings)}"}
        response = client.post(GENERATIONS, json={"prompt": "harbour"}, headers=auth)

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "image_store_unavailable"
    assert "VISIONCRAFT_GCS_BUCKET" in problem["detail"]
    startup_errors = [record.getMessage() for record in caplog.records]
    assert any("gcs image store is not usable" in message for message in startup_errors)
