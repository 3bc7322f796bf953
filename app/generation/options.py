"""Aspect ratios, pixel sizes, image sizes and styles that every backend shares."""

from __future__ import annotations

from enum import StrEnum

# Pixel sizes that Gemini image models produce at the 1K image size, by aspect ratio.
PIXELS_AT_1K: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
ASPECT_RATIOS = tuple(PIXELS_AT_1K)
DEFAULT_ASPECT_RATIO = "1:1"


class ImageSize(StrEnum):
    K1 = "1K"
    K2 = "2K"
    K4 = "4K"

    @property
    def scale(self) -> int:
        return {"1K": 1, "2K": 2, "4K": 4}[self.value]


# OpenAI's `size` values and the aspect ratio each one means here.
OPENAI_SIZES: dict[str, str] = {
    "1024x1024": "1:1",
    "1536x1024": "3:2",
    "1024x1536": "2:3",
    "auto": "1:1",
}

# Styles and the hint each one adds to the prompt.
STYLE_HINTS: dict[str, str] = {
    "photographic": "a realistic photograph with natural light",
    "digital-art": "polished digital art with crisp detail",
    "anime": "anime illustration with clean line art and flat colour",
    "watercolor": "a soft watercolour painting on textured paper",
    "oil-painting": "an oil painting with visible brush strokes",
    "sketch": "a pencil sketch in monochrome",
    "pixel-art": "retro pixel art with a limited palette",
    "3d-render": "a 3D render with soft global illumination",
    "cinematic": "a cinematic still with dramatic lighting",
}
STYLES = tuple(STYLE_HINTS)

MAX_IMAGES_PER_REQUEST = 4
# Image i of a request uses seed + i, and every seed must fit a signed 32-bit integer.
MAX_SEED = 2**31 - 1 - (MAX_IMAGES_PER_REQUEST - 1)


def pixel_size(aspect_ratio: str, image_size: ImageSize = ImageSize.K1) -> tuple[int, int]:
    """Return (width, height) in pixels for a supported aspect ratio and image size."""
    width, height = PIXELS_AT_1K[aspect_ratio]
    return width * image_size.scale, height * image_size.scale


def compose_prompt(prompt: str, *, style: str | None, negative_prompt: str | None) -> str:
    """Fold the style hint and the negative prompt into one text prompt.

    Gemini image models take no separate negative prompt or style, so both become sentences.
    """
    parts = [prompt.strip()]
    if style:
        parts.append(f"Style: {STYLE_HINTS[style]}.")
    if negative_prompt and negative_prompt.strip():
        parts.append(f"Avoid: {negative_prompt.strip()}.")
    return "\n".join(parts)
