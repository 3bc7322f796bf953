"""Static files with content-hashed URLs, so that browsers may cache them for a year.

`css/site.css` is served at `/static/css/site.<hash>.css`, where the hash is the first 12 hex
digits of the file's SHA-256. A changed file gets a new URL, so a cached old copy is never used.
The plain URL works too, with a short cache lifetime, for links that cannot carry the hash.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/static"
HASH_CHARS = 12
HASHED_CACHE_CONTROL = "public, max-age=31536000, immutable"
PLAIN_CACHE_CONTROL = "public, max-age=300"

# Types that mimetypes may not know on a minimal system.
EXTRA_MEDIA_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
    ".md": "text/markdown",
    ".ico": "image/x-icon",
}


@dataclass(frozen=True)
class StaticFile:
    path: Path
    media_type: str
    cache_control: str


def _hashed_name(relative: PurePosixPath, digest: str) -> str:
    return str(relative.with_name(f"{relative.stem}.{digest}{relative.suffix}"))


def _media_type(path: Path) -> str:
    media_type = EXTRA_MEDIA_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    media_type = media_type or "application/octet-stream"
    if media_type.startswith("text/") or media_type == "image/svg+xml":
        media_type += "; charset=utf-8"
    return media_type


class StaticFiles:
    """The files under one folder, hashed once at start; only listed files are ever served."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        self.root = root
        self._urls: dict[str, str] = {}
        self._files: dict[str, StaticFile] = {}
        for path in sorted(root.rglob("*")):
            if path.is_file():
                self._add(path)

    def _add(self, path: Path) -> None:
        relative = PurePosixPath(path.relative_to(self.root).as_posix())
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:HASH_CHARS]
        hashed = _hashed_name(relative, digest)
        media_type = _media_type(path)
        self._urls[str(relative)] = f"{STATIC_PREFIX}/{hashed}"
        self._files[hashed] = StaticFile(path, media_type, HASHED_CACHE_CONTROL)
        self._files.setdefault(str(relative), StaticFile(path, media_type, PLAIN_CACHE_CONTROL))

    def url(self, name: str) -> str:
        """Return the hashed URL of `name` (relative to the static folder); KeyError if unknown."""
        try:
            return self._urls[name]
        except KeyError:
            raise KeyError(f"no static file {name!r} under {self.root}") from None

    def find(self, served_path: str) -> StaticFile | None:
        """Return the file behind a URL path below /static/, or None when there is none."""
        return self._files.get(served_path)
