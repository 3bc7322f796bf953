"""The offline `demo` backend: deterministic abstract images drawn with Pillow.

The same prompt, style and seed always give the same image. Colours come from colour words in the
prompt (or from its hash), and the layout of shapes from the prompt, the style and the seed, so
two prompts give clearly different pictures. Every image carries a small DEMO mark.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import re
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from app.generation.backend import BackendImage, BackendResult, ImageSpec, ModelInfo
from app.generation.options import ImageSize, pixel_size

DEMO_MODEL = "demo"
Colour = tuple[int, int, int]

# Words a prompt may contain and the colour each one suggests.
COLOUR_WORDS: dict[str, Colour] = {
    "red": (214, 40, 57),
    "orange": (247, 127, 0),
    "yellow": (252, 191, 73),
    "gold": (212, 175, 55),
    "green": (56, 176, 0),
    "forest": (34, 87, 50),
    "blue": (0, 119, 182),
    "ocean": (0, 95, 115),
    "sea": (10, 147, 150),
    "sky": (135, 206, 235),
    "purple": (114, 9, 183),
    "violet": (155, 93, 229),
    "pink": (255, 112, 166),
    "white": (240, 240, 235),
    "snow": (230, 240, 250),
    "black": (20, 20, 24),
    "night": (16, 24, 64),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
    "brown": (121, 85, 61),
    "sunset": (255, 94, 77),
    "fire": (226, 88, 34),
    "desert": (237, 201, 175),
}
WORD_PATTERN = re.compile(r"[a-z]+")
PNG_COMPRESS_LEVEL = 3  # level 6 (the default) costs about twice the time for a few % of size


class DemoBackend:
    """Draws images locally; it never calls a network service and spends nothing."""

    name = "demo"

    def models(self) -> Sequence[ModelInfo]:
        return [
            ModelInfo(
                id=DEMO_MODEL,
                backend=self.name,
                image_sizes=(ImageSize.K1, ImageSize.K2, ImageSize.K4),
                description="Offline abstract images for trying the API; no credentials needed.",
            )
        ]

    async def prepare(self) -> None:
        return None

    async def generate(self, spec: ImageSpec) -> BackendResult:
        images = []
        for index in range(spec.count):
            seed = spec.seed + index
            data, (width, height) = await asyncio.to_thread(render_png, spec, seed)
            images.append(
                BackendImage(
                    data=data, mime_type="image/png", width=width, height=height, seed=seed
                )
            )
        return BackendResult(images=images, model=DEMO_MODEL)

    async def aclose(self) -> None:
        return None


def render_png(spec: ImageSpec, seed: int) -> tuple[bytes, tuple[int, int]]:
    """Draw one image for `spec` and `seed` and return its PNG bytes and (width, height)."""
    image = render_image(
        spec.prompt,
        style=spec.style,
        seed=seed,
        size=pixel_size(spec.aspect_ratio, spec.image_size),
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue(), image.size


def render_image(
    prompt: str, *, style: str | None, seed: int, size: tuple[int, int]
) -> Image.Image:
    digest = hashlib.sha256(f"{prompt}\x00{style}\x00{seed}".encode()).digest()
    rng = random.Random(digest)  # noqa: S311 - a picture, not a secret
    palette = _palette(prompt, rng)
    width, height = size

    # Work at a quarter of the size and scale up: it keeps a 4K image fast and smooths edges.
    small = (max(width // 4, 1), max(height // 4, 1))
    image = _gradient(small, palette[0], palette[1], angle=rng.choice((0, 45, 90, 135)))
    overlay = Image.new("RGBA", small, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for _ in range(rng.randint(6, 14)):
        _draw_shape(draw, rng, small, colour=rng.choice(palette[1:]), style=style)
    image = Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
    image = _apply_style(image, style)
    image = image.resize(
        size, Image.Resampling.NEAREST if style == "pixel-art" else Image.Resampling.BILINEAR
    )
    _draw_demo_mark(image)
    return image


def _palette(prompt: str, rng: random.Random) -> list[Colour]:
    named = [
        COLOUR_WORDS[word] for word in WORD_PATTERN.findall(prompt.lower()) if word in COLOUR_WORDS
    ]
    colours = list(dict.fromkeys(named))
    while len(colours) < 4:
        colours.append((rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    return colours


def _gradient(size: tuple[int, int], start: Colour, end: Colour, *, angle: int) -> Image.Image:
    ramp = Image.linear_gradient("L").rotate(
        angle, resample=Image.Resampling.BILINEAR, expand=False
    )
    ramp = ImageOps.autocontrast(ramp).resize(size, Image.Resampling.BILINEAR)
    return ImageOps.colorize(ramp, black=start, white=end)


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    size: tuple[int, int],
    *,
    colour: Colour,
    style: str | None,
) -> None:
    width, height = size
    x, y = rng.randrange(width), rng.randrange(height)
    radius = rng.randint(min(width, height) // 12 + 1, min(width, height) // 3 + 2)
    fill = (*colour, rng.randint(90, 210))
    box = (x - radius, y - radius, x + radius, y + radius)
    kind = rng.choice(("ellipse", "rectangle", "polygon")) if style != "sketch" else "outline"
    if kind == "ellipse":
        draw.ellipse(box, fill=fill)
    elif kind == "rectangle":
        draw.rectangle(box, fill=fill)
    elif kind == "polygon":
        points = [
            (x + rng.randint(-radius, radius), y + rng.randint(-radius, radius)) for _ in range(3)
        ]
        draw.polygon(points, fill=fill)
    else:
        draw.ellipse(box, outline=(40, 40, 40, 255), width=max(1, radius // 20))


def _apply_style(image: Image.Image, style: str | None) -> Image.Image:
    if style == "watercolor":
        return image.filter(ImageFilter.GaussianBlur(radius=3))
    if style == "sketch":
        return ImageOps.grayscale(image).convert("RGB")
    if style == "pixel-art":
        return image.resize(
            (max(image.width // 8, 1), max(image.height // 8, 1)), Image.Resampling.NEAREST
        )
    if style == "oil-painting":
        return image.filter(ImageFilter.ModeFilter(size=5))
    return image


def _draw_demo_mark(image: Image.Image) -> None:
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(12, image.width // 40))
    text = "DEMO"
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    margin = max(8, image.width // 100)
    x = image.width - (right - left) - 2 * margin
    y = image.height - (bottom - top) - 2 * margin
    draw.rectangle(
        (x - margin // 2, y - margin // 2, image.width - margin, image.height - margin),
        fill=(0, 0, 0),
    )
    draw.text((x, y - top), text, fill=(255, 255, 255), font=font)
