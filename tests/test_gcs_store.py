"""Tests of the gcs image store through the real google-cloud-storage client and a fake API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import TEST_BUCKET, make_settings
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from opentelemetry.metrics import NoOpMeterProvider
from pydantic import ValidationError

from app.accounts.credits import CreditService
from app.accounts.keys import KeyService
from app.accounts.metrics import AccountMetrics
from app.accounts.plans import PlanCatalog
from app.accounts.service import AccountService
from app.errors import ImageStoreUnavailableError
from app.generation.demo import DemoBackend
from app.generation.service import GenerationRequest, GenerationService
from app.storage.blobs import BlobNotFoundError
from app.storage.database import create_engine, create_session_factory, migrate
from app.storage.gcs import STORAGE_RETRY, GcsImageStore
from app.storage.tables import utc_now
from fakes.gcs_api import FakeCloudStorage, forbidden, service_unavailable

pytestmark = pytest.mark.anyio

KEY = "acct_test/img_test.png"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
# google-cloud-storage sends uploads above 8 MiB as resumable uploads.
MULTIPART_LIMIT_BYTES = 8 * 1024 * 1024
FAST_RETRY = STORAGE_RETRY.with_delay(initial=0.01, maximum=0.05)


def anonymous_client() -> storage.Client:
    return storage.Client(project=None, credentials=AnonymousCredentials())


@pytest.fixture
async def store(fake_gcs: FakeCloudStorage) -> AsyncIterator[GcsImageStore]:
    built = GcsImageStore(TEST_BUCKET, client_factory=anonymous_client, retry=FAST_RETRY)
    yield built
    await built.aclose()


async def test_put_then_get_returns_same_bytes(
    store: GcsImageStore, fake_gcs: FakeCloudStorage
) -> None:
    await store.put(KEY, PNG, "image/png")

    assert await store.get(KEY) == PNG
    stored = fake_gcs.objects(TEST_BUCKET)[KEY]
    assert stored.data == PNG
    assert stored.content_type == "image/png"


async def test_put_creates_only_new_objects(
    store: GcsImageStore, fake_gcs: FakeCloudStorage
) -> None:
    await store.put(KEY, PNG, "image/png")

    uploads = fake_gcs.requests_of("upload")
    assert len(uploads) == 1
    assert uploads[0].query["uploadType"] == "multipart"
    assert uploads[0].query["ifGenerationMatch"] == "0"


async def test_large_image_uses_resumable_upload(
    store: GcsImageStore, fake_gcs: FakeCloudStorage
) -> None:
    data = PNG * (MULTIPART_LIMIT_BYTES // len(PNG) + 1)

    await store.put(KEY, data, "image/png")

    assert await store.get(KEY) == data
    upload_types = [request.query["uploadType"] for request in fake_gcs.requests_of("upload")]
    assert upload_types[0] == "resumable"
    assert fake_gcs.objects(TEST_BUCKET)[KEY].content_type == "image/png"


async def test_get_missing_object_is_blob_not_found(store: GcsImageStore) -> None:
    with pytest.raises(BlobNotFoundError) as raised:
        await store.get("acct_test/img_missing.png")

    assert raised.value.instance_code == "image_content_not_found"


async def test_delete_removes_object(store: GcsImageStore, fake_gcs: FakeCloudStorage) -> None:
    await store.put(KEY, PNG, "image/png")

    await store.delete(KEY)

    assert KEY not in fake_gcs.objects(TEST_BUCKET)
    with pytest.raises(BlobNotFoundError):
        await store.get(KEY)


async def test_delete_missing_object_is_no_error(
    store: GcsImageStore, fake_gcs: FakeCloudStorage
) -> None:
    await store.delete(KEY)

    assert [request.status for request in fake_gcs.requests_of("delete")] == [404]


async def test_upload_is_retried_after_503(
    store: GcsImageStore, fake_gcs: FakeCloudStorage
) -> None:
    fake_gcs.fail_next("upload", service_unavailable())

    await store.put(KEY, PNG, "image/png")

    assert [request.status for request in fake_gcs.requests_of("upload")] == [503, 200]
    assert fake_gcs.objects(TEST_BUCKET)[KEY].data == PNG


async def test_put_accepts_own_earlier_upload(
    store: GcsImageStore, fake_gcs: FakeCloudStorage
) -> None:
    # What a retry finds when its first attempt landed but the response was lost.
    fake_gcs.put_object(TEST_BUCKET, KEY, PNG, "image/png")

    await store.put(KEY, PNG, "image/png")

    assert [request.status for request in fake_gcs.requests_of("upload")] == [412]
    assert fake_gcs.objects(TEST_BUCKET)[KEY].data == PNG


async def test_put_never_overwrites_other_bytes(
    store: GcsImageStore, fake_gcs: FakeCloudStorage
) -> None:
    fake_gcs.put_object(TEST_BUCKET, KEY, b"other bytes", "image/png")

    with pytest.raises(ImageStoreUnavailableError) as raised:
        await store.put(KEY, PNG, "image/png")

    assert KEY in raised.value.detail
    assert fake_gcs.objects(TEST_BUCKET)[KEY].data == b"other bytes"


async def test_lasting_503_is_unavailable_error(fake_gcs: FakeCloudStorage) -> None:
    store = GcsImageStore(
        TEST_BUCKET, client_factory=anonymous_client, retry=FAST_RETRY.with_timeout(0.3)
    )
    fake_gcs.fail_next("download", *[service_unavailable()] * 200)
    try:
        with pytest.raises(ImageStoreUnavailableError) as raised:
            await store.get(KEY)
    finally:
        await store.aclose()

    assert raised.value.instance_code == "image_store_unavailable"
    assert "HTTP 503" in raised.value.detail
    assert "Try again later" in raised.value.detail
    assert len(fake_gcs.requests_of("download")) > 1


async def test_missing_bucket_names_setting(fake_gcs: FakeCloudStorage) -> None:
    store = GcsImageStore("no-such-bucket", client_factory=anonymous_client, retry=FAST_RETRY)
    try:
        with pytest.raises(ImageStoreUnavailableError) as checked:
            await store.check()
        with pytest.raises(ImageStoreUnavailableError) as written:
            await store.put(KEY, PNG, "image/png")
    finally:
        await store.aclose()

    for raised in (checked, written):
        assert "'no-such-bucket'" in raised.value.detail
        assert "VISIONCRAFT_GCS_BUCKET" in raised.value.detail


async def test_check_passes_on_existing_bucket(
    store: GcsImageStore, fake_gcs: FakeCloudStorage
) -> None:
    await store.check()

    assert [request.status for request in fake_gcs.requests_of("list")] == [200]


async def test_denied_permission_names_role(
    store: GcsImageStore, fake_gcs: FakeCloudStorage
) -> None:
    fake_gcs.fail_next("list", forbidden("storage.objects.list"))

    with pytest.raises(ImageStoreUnavailableError) as raised:
        await store.check()

    assert "HTTP 403" in raised.value.detail
    assert "roles/storage.objectUser" in raised.value.detail
    assert "GOOGLE_APPLICATION_CREDENTIALS" in raised.value.detail


async def test_anonymous_caller_on_private_bucket(
    store: GcsImageStore, fake_gcs: FakeCloudStorage
) -> None:
    # The client reacts to a 401 by refreshing its token, which anonymous credentials cannot do.
    fake_gcs.required_token = "a-token-the-client-does-not-have"

    with pytest.raises(ImageStoreUnavailableError) as raised:
        await store.check()

    assert "could not be refreshed" in raised.value.detail
    assert "GOOGLE_APPLICATION_CREDENTIALS" in raised.value.detail


async def test_missing_credentials_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A key file that does not exist fails before google-auth looks anywhere else.
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    store = GcsImageStore(TEST_BUCKET)

    with pytest.raises(ImageStoreUnavailableError) as raised:
        await store.put(KEY, PNG, "image/png")

    assert "DefaultCredentialsError" in raised.value.detail
    assert "GOOGLE_APPLICATION_CREDENTIALS" in raised.value.detail
    await store.aclose()


async def test_invalid_key_is_rejected_before_any_request(
    store: GcsImageStore, fake_gcs: FakeCloudStorage
) -> None:
    for key in ("../escape.png", "/absolute.png", "acct/img png"):
        with pytest.raises(ValueError, match="invalid storage key"):
            await store.put(key, PNG, "image/png")

    assert fake_gcs.requests_of("upload") == []


async def test_concurrent_puts_all_land(store: GcsImageStore, fake_gcs: FakeCloudStorage) -> None:
    keys = [f"acct_test/img_{index}.png" for index in range(8)]

    await asyncio.gather(*(store.put(key, key.encode(), "image/png") for key in keys))

    stored = fake_gcs.objects(TEST_BUCKET)
    assert sorted(stored) == sorted(keys)
    for key in keys:
        assert stored[key].data == key.encode()


async def test_retention_deletes_bytes_from_bucket(
    store: GcsImageStore, fake_gcs: FakeCloudStorage, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'retention.db'}"
    await migrate(url)
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    generation = GenerationService(
        sessions=sessions,
        store=store,
        backends={"demo": DemoBackend()},
        live_backend="demo",
        backend_timeout_s=30,
        request_timeout_s=60,
    )
    keys = KeyService(sessions, b"retention-test-secret")
    plans = PlanCatalog(sessions)
    credits = CreditService(
        sessions, plans, AccountMetrics(NoOpMeterProvider()), purchase_url="http://test/pricing"
    )
    account = await AccountService(sessions, plans, credits).create("owner@example.com")
    principal = await keys.authenticate((await keys.create(account.id, name="a")).token)
    try:
        outcome = await generation.generate(principal, GenerationRequest(prompt="old", count=2))
        stored_keys = {image.storage_key for image in outcome.images}
        assert stored_keys <= set(fake_gcs.objects(TEST_BUCKET))

        deleted = await generation.delete_expired_images(utc_now())
    finally:
        await engine.dispose()

    assert deleted == 2
    assert stored_keys.isdisjoint(fake_gcs.objects(TEST_BUCKET))


def test_gcs_store_needs_bucket(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as raised:
        make_settings(tmp_path, image_store="gcs")

    assert "VISIONCRAFT_GCS_BUCKET" in str(raised.value)


@pytest.mark.parametrize("bucket", ["gs://images", "Images", "ab", "-images", "images-"])
def test_invalid_bucket_name_is_rejected(tmp_path: Path, bucket: str) -> None:
    with pytest.raises(ValidationError) as raised:
        make_settings(tmp_path, image_store="gcs", gcs_bucket=bucket)

    assert "not a Cloud Storage bucket name" in str(raised.value)
