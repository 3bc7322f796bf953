"""Request and response bodies of the image routes, in OpenAI's shape plus our fields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from app.generation.options import (
    ASPECT_RATIOS,
    DEFAULT_ASPECT_RATIO,
    MAX_IMAGES_PER_REQUEST,
    MAX_SEED,
    OPENAI_SIZES,
    STYLES,
    ImageSize,
)
from app.generation.service import GenerationRequest

MAX_PROMPT_CHARS = 4000
MAX_NEGATIVE_PROMPT_CHARS = 2000


class ImageGenerationCreate(BaseModel):
    """`POST /api/v1/images/generations`: OpenAI's fields and ours."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description=f"What to draw; 1 to {MAX_PROMPT_CHARS} characters.")
    n: int = Field(1, ge=1, le=MAX_IMAGES_PER_REQUEST, description="Number of images.")
    size: str | None = Field(None, description=f"OpenAI size: {', '.join(OPENAI_SIZES)}.")
    aspect_ratio: str | None = Field(None, description=f"One of {', '.join(ASPECT_RATIOS)}.")
    image_size: ImageSize = Field(ImageSize.K1, description="1K (default), 2K or 4K.")
    response_format: Literal["url", "b64_json"] = "url"
    model: str | None = Field(
        None, max_length=100, description="A model id from GET /api/v1/models."
    )
    user: str | None = Field(None, max_length=256, description="Your id for the end user.")
    negative_prompt: str | None = Field(None, max_length=MAX_NEGATIVE_PROMPT_CHARS)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    style: str | None = Field(None, description=f"One of {', '.join(STYLES)}.")

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt is empty; describe the image you want")
        if len(value) > MAX_PROMPT_CHARS:
            raise ValueError(
                f"the prompt has {len(value)} characters; the limit is {MAX_PROMPT_CHARS}"
            )
        return value

    @field_validator("size")
    @classmethod
    def _check_size(cls, value: str | None) -> str | None:
        if value is not None and value not in OPENAI_SIZES:
            raise ValueError(
                f"size {value!r} is not supported; use one of {', '.join(OPENAI_SIZES)}, "
                "or `aspect_ratio` for other shapes"
            )
        return value

    @field_validator("aspect_ratio")
    @classmethod
    def _check_aspect_ratio(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if value not in ASPECT_RATIOS:
            raise ValueError(
                f"aspect_ratio {value!r} is not supported; use one of {', '.join(ASPECT_RATIOS)}"
            )
        size = info.data.get("size")  # validated before aspect_ratio, which follows it
        if size is not None and OPENAI_SIZES[size] != value:
            raise ValueError(
                f"size {size!r} means aspect ratio {OPENAI_SIZES[size]}, but aspect_ratio is "
                f"{value!r}; send only one of them"
            )
        return value

    @field_validator("style")
    @classmethod
    def _check_style(cls, value: str | None) -> str | None:
        if value is not None and value not in STYLES:
            raise ValueError(f"style {value!r} is not supported; use one of {', '.join(STYLES)}")
        return value

    def resolved_aspect_ratio(self) -> str:
        if self.aspect_ratio is not None:
            return self.aspect_ratio
        if self.size is not None:
            return OPENAI_SIZES[self.size]
        return DEFAULT_ASPECT_RATIO

    def to_request(self) -> GenerationRequest:
        return GenerationRequest(
            prompt=self.prompt,
            count=self.n,
            aspect_ratio=self.resolved_aspect_ratio(),
            image_size=self.image_size,
            model=self.model,
            negative_prompt=self.negative_prompt,
            style=self.style,
            seed=self.seed,
            response_format=self.response_format,
            end_user=self.user,
        )


class GeneratedImagePublic(BaseModel):
    id: str
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None
    width: int
    height: int
    seed: int


class InputTokensDetails(BaseModel):
    text_tokens: int
    image_tokens: int


class GenerationUsage(BaseModel):
    """Token usage in OpenAI's shape (0 when the backend reports none) and the image count."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails
    images: int


class ImageGenerationPublic(BaseModel):
    created: int
    id: str
    backend: str
    model: str
    data: list[GeneratedImagePublic]
    usage: GenerationUsage


class ImagePublic(BaseModel):
    id: str
    object: Literal["image"] = "image"
    generation_id: str
    created: int
    width: int
    height: int
    seed: int
    content_type: str
    size_bytes: int
    url: str


class ImageListPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[ImagePublic]
    has_more: bool
    next_cursor: str | None


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    backend: str
    image_sizes: list[str]
    aspect_ratios: list[str]
    description: str


class ModelListPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]
