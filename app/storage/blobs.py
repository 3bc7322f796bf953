"""Image bytes storage: the ImageStore protocol and the `local` store in DATA_DIR."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Protocol

from app.errors import ImageStoreUnavailableError, NotFoundError

STORAGE_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}$")


class BlobNotFoundError(NotFoundError):
    code = "image_content_not_found"


class ImageStore(Protocol):
    """Stores image bytes under keys such as `acct_X/img_Y.png`. Every method is async."""

    name: str

    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def get(self, key: str) -> bytes:
        """Return the bytes stored under `key`, or raise BlobNotFoundError."""
        ...

    async def delete(self, key: str) -> None:
        """Delete `key`. A missing key is not an error, so two retention sweeps may overlap."""
        ...

    async def check(self) -> None:
        """Raise ImageStoreUnavailableError, naming the setting to fix, when the store is unusable."""
        ...

    async def aclose(self) -> None: ...


def validate_storage_key(key: str) -> str:
    if not STORAGE_KEY_PATTERN.match(key) or ".." in key:
        raise ValueError(f"invalid storage key {key!r}: use letters, digits, '_', '-', '.', '/'")
    return key


class LocalImageStore:
    """Files under a folder on the local disk; one process or one shared volume."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / validate_storage_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write, self._path(key), data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename, so a reader never sees half an image.
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(data)
        temporary.replace(path)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise BlobNotFoundError(f"No image content is stored under {key!r}.") from None

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def check(self) -> None:
        try:
            await asyncio.to_thread(self._write_probe)
        except OSError as error:
            raise ImageStoreUnavailableError(
                f"The local image store cannot write to {self.root} ({error.strerror}). "
                "Make VISIONCRAFT_DATA_DIR a writable folder, or set VISIONCRAFT_IMAGE_STORE=gcs."
            ) from error

    def _write_probe(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / f".probe.{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()

    async def aclose(self) -> None:
        return None
