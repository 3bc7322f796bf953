"""The ImageBackend protocol that the demo and gemini backends implement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.generation.options import ImageSize


@dataclass(frozen=True)
class ModelInfo:
    """A model a backend offers, as `GET /api/v1/models` lists it."""

    id: str
    backend: str
    image_sizes: tuple[ImageSize, ...]
    description: str = ""


@dataclass(frozen=True)
class ImageSpec:
    """What to generate. `prompt` already carries the style hint and the negative prompt."""

    prompt: str
    model: str
    aspect_ratio: str
    image_size: ImageSize
    count: int
    seed: int
    style: str | None = None


@dataclass(frozen=True)
class BackendImage:
    data: bytes
    mime_type: str
    width: int
    height: int
    seed: int


@dataclass(frozen=True)
class BackendResult:
    images: Sequence[BackendImage]
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


class ImageBackend(Protocol):
    """Turns an ImageSpec into images, or raises one of the errors in `app.errors`.

    Backends raise ContentPolicyViolation for blocked prompts or images, RateLimitedError
    for upstream 429s, UpstreamUnavailableError for configuration the operator must fix,
    and UpstreamError for anything else. The caller applies the timeout.
    """

    name: str

    def models(self) -> Sequence[ModelInfo]:
        """Return the models this backend offers, the default one first."""
        ...

    async def prepare(self) -> None:
        """Set up what the first call needs; raise UpstreamUnavailableError when it cannot work.

        It never calls the paid API: it only builds clients and reads credentials.
        """
        ...

    async def generate(self, spec: ImageSpec) -> BackendResult: ...

    async def aclose(self) -> None: ...
