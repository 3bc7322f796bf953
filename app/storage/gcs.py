"""The `gcs` image store: image bytes in one Cloud Storage bucket that every replica shares.

Calls go through google-cloud-storage, whose client blocks, so each call runs in a worker
thread; the client is safe to share between threads. It is built on the first call, because
looking up Application Default Credentials may block. The client reads its credentials from
GOOGLE_APPLICATION_CREDENTIALS or the platform (Cloud Run, GKE Workload Identity), and
`STORAGE_EMULATOR_HOST` points it at an emulator without credentials.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Callable
from typing import TypeVar

import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exceptions
from google.cloud import storage
from google.cloud.storage import exceptions as storage_exceptions
from google.cloud.storage.retry import DEFAULT_RETRY

from app.errors import ImageStoreUnavailableError
from app.storage.blobs import BlobNotFoundError, validate_storage_key

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The predefined role that grants what the store does: create, read, list and delete objects.
REQUIRED_ROLE = "roles/storage.objectUser"
CREDENTIALS_HELP = (
    "Set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, or run with Application "
    "Default Credentials (Cloud Run's or GKE's service account), and restart the service."
)
HTTP_TIMEOUT_S = 30.0
# Retry 429, 5xx and connection errors with the library's backoff for up to this long per call.
STORAGE_RETRY: Retry = DEFAULT_RETRY.with_timeout(60.0)
# Exceptions of a failed call: API errors (RetryError once retries run out), auth errors,
# transport errors of requests, and the media layer's invalid-response and checksum errors.
CLIENT_ERRORS = (
    api_exceptions.GoogleAPIError,
    auth_exceptions.GoogleAuthError,
    requests.RequestException,
    storage_exceptions.InvalidResponse,
    storage_exceptions.DataCorruption,
    ConnectionError,
)


def _md5_base64(data: bytes) -> str:
    """Return the MD5 digest in the form of Cloud Storage's `md5Hash` field."""
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def build_client() -> storage.Client:
    """Build a client from the environment's credentials, without a project (objects need none)."""
    return storage.Client(project=None)


class GcsImageStore:
    """Objects in one Cloud Storage bucket, named by the storage key, shared by all replicas."""

    name = "gcs"

    def __init__(
        self,
        bucket: str,
        *,
        client_factory: Callable[[], storage.Client] = build_client,
        retry: Retry = STORAGE_RETRY,
    ) -> None:
        self.bucket_name = bucket
        self._client_factory = client_factory
        self._retry = retry
        self._client: storage.Client | None = None
        self._client_lock = asyncio.Lock()

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under a new `key`; an existing object under `key` with other bytes is an error."""
        validate_storage_key(key)
        await self._run(self._upload, key, data, content_type)

    async def get(self, key: str) -> bytes:
        """Return the bytes under `key`, or raise BlobNotFoundError when there is no such object."""
        validate_storage_key(key)
        return await self._run(self._download, key)

    async def delete(self, key: str) -> None:
        """Delete `key`. A missing object counts as deleted, so replicas may sweep the same keys."""
        validate_storage_key(key)
        await self._run(self._delete, key)

    async def check(self) -> None:
        """List one object, which needs the bucket, the credentials and the list permission."""
        await self._run(self._list_one)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        """Run `call(client, *args)` in a worker thread and turn client errors into domain errors."""
        client = await self._get_client()
        try:
            return await asyncio.to_thread(call, client, *args)
        except CLIENT_ERRORS as error:
            raise self._translate(error) from error

    async def _get_client(self) -> storage.Client:
        async with self._client_lock:
            if self._client is None:
                try:
                    self._client = await asyncio.to_thread(self._client_factory)
                except auth_exceptions.GoogleAuthError as error:
                    raise ImageStoreUnavailableError(
                        "The gcs image store found no usable Google credentials "
                        f"({type(error).__name__}). {CREDENTIALS_HELP}"
                    ) from error
                logger.info("Built the Cloud Storage client for bucket %s", self.bucket_name)
            return self._client

    def _upload(self, client: storage.Client, key: str, data: bytes, content_type: str) -> None:
        blob = client.bucket(self.bucket_name).blob(key)
        try:
            # ifGenerationMatch=0 creates the object only if it does not exist yet, which makes
            # the upload safe to retry: the library retries only uploads with a precondition.
            blob.upload_from_string(
                data,
                content_type=content_type,
                if_generation_match=0,
                timeout=HTTP_TIMEOUT_S,
                retry=self._retry,
            )
        except api_exceptions.PreconditionFailed:
            # A retry whose first attempt landed finds its own object. Other bytes are a clash.
            blob.reload(timeout=HTTP_TIMEOUT_S, retry=self._retry)
            if blob.md5_hash != _md5_base64(data):
                raise ImageStoreUnavailableError(
                    f"The gcs image store did not overwrite the existing object {key!r} in "
                    f"bucket {self.bucket_name!r}, which holds other bytes."
                ) from None

    def _download(self, client: storage.Client, key: str) -> bytes:
        blob = client.bucket(self.bucket_name).blob(key)
        try:
            data: bytes = blob.download_as_bytes(timeout=HTTP_TIMEOUT_S, retry=self._retry)
        except api_exceptions.NotFound:
            # A missing bucket also returns 404. The start-up check logs that case by name.
            raise BlobNotFoundError(f"No image content is stored under {key!r}.") from None
        return data

    def _delete(self, client: storage.Client, key: str) -> None:
        blob = client.bucket(self.bucket_name).blob(key)
        try:
            blob.delete(timeout=HTTP_TIMEOUT_S, retry=self._retry)
        except api_exceptions.NotFound:
            return

    def _list_one(self, client: storage.Client) -> None:
        blobs = client.list_blobs(
            self.bucket_name, max_results=1, timeout=HTTP_TIMEOUT_S, retry=self._retry
        )
        for _blob in blobs:
            break

    def _translate(self, error: Exception) -> ImageStoreUnavailableError:
        """Return the domain error for a client error; its detail names the setting to fix."""
        bucket = self.bucket_name
        if isinstance(error, api_exceptions.RetryError) and isinstance(error.cause, Exception):
            error = error.cause
        if isinstance(error, auth_exceptions.GoogleAuthError) and not isinstance(
            error, auth_exceptions.TransportError
        ):
            # Cloud Storage returned 401 and the credentials could not get a new token.
            return ImageStoreUnavailableError(
                f"The Google credentials of the gcs image store were rejected and could not be "
                f"refreshed ({type(error).__name__}). {CREDENTIALS_HELP}"
            )
        status = _http_status(error)
        if status in (401, 403):
            return ImageStoreUnavailableError(
                f"Cloud Storage rejected the credentials of the gcs image store for bucket "
                f"{bucket!r} (HTTP {status}). Grant the service account {REQUIRED_ROLE} on "
                f"the bucket. {CREDENTIALS_HELP}"
            )
        if status == 404:
            return ImageStoreUnavailableError(
                f"The bucket {bucket!r} of the gcs image store does not exist. Set "
                "VISIONCRAFT_GCS_BUCKET to an existing bucket and restart the service."
            )
        return ImageStoreUnavailableError(
            f"Cloud Storage failed to serve bucket {bucket!r} "
            f"({f'HTTP {status}' if status else type(error).__name__}). Try again later."
        )


def _http_status(error: Exception) -> int | None:
    """Return the HTTP status of an API error or of the media layer's invalid response."""
    if isinstance(error, api_exceptions.GoogleAPICallError):
        return error.code
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None
