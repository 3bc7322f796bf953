"""The demo backend: deterministic, prompt-driven, exact sizes, offline."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from PIL import Image, ImageStat

from app.generation.backend import ImageSpec
from app.generation.demo import DemoBackend, render_image
from app.generation.options import PIXELS_AT_1K, ImageSize


def _spec(prompt: str, **overrides: object) -> ImageSpec:
    values: dict[str, object] = {
        "prompt": prompt,
        "model": "demo",
        "aspect_ratio": "1:1",
        "image_size": ImageSize.K1,
        "count": 1,
        "seed": 7,
    }
    values.update(overrides)
    return ImageSpec(**values)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_same_prompt_and_seed_give_same_bytes() -> None:
    backend = DemoBackend()
    first = await backend.generate(_spec("a quiet harbour"))
    second = await backend.generate(_spec("a quiet harbour"))

    assert first.images[0].data == second.images[0].data


@pytest.mark.anyio
async def test_seed_changes_the_image() -> None:
    backend = DemoBackend()
    first = await backend.generate(_spec("a quiet harbour", seed=1))
    second = await backend.generate(_spec("a quiet harbour", seed=2))

    assert first.images[0].data != second.images[0].data


def test_different_prompts_differ_clearly() -> None:
    first = render_image("a red fox on snow", style=None, seed=5, size=(1024, 1024))
    second = render_image("a quiet green forest at night", style=None, seed=5, size=(1024, 1024))
    pixels = list(zip(first.get_flattened_data(), second.get_flattened_data(), strict=True))
    differing = sum(1 for a, b in pixels if sum(abs(x - y) for x, y in zip(a, b, strict=True)) > 30)
    mean_first = ImageStat.Stat(first).mean
    mean_second = ImageStat.Stat(second).mean

    assert differing / len(pixels) > 0.5
    assert sum(abs(a - b) for a, b in zip(mean_first, mean_second, strict=True)) > 30


def test_colour_words_steer_the_palette() -> None:
    red = ImageStat.Stat(render_image("red red fire", style=None, seed=3, size=(256, 256))).mean
    blue = ImageStat.Stat(render_image("blue ocean sky", style=None, seed=3, size=(256, 256))).mean

    assert red[0] > red[2]
    assert blue[2] > blue[0]


def test_sketch_style_is_grey() -> None:
    image = render_image("a red barn", style="sketch", seed=3, size=(256, 256))
    sample = image.crop((0, 0, 200, 200))

    assert all(r == g == b for r, g, b in sample.get_flattened_data())


@pytest.mark.anyio
@pytest.mark.parametrize("aspect_ratio", list(PIXELS_AT_1K))
async def test_exact_pixel_sizes(aspect_ratio: str) -> None:
    result = await DemoBackend().generate(_spec("sizes", aspect_ratio=aspect_ratio, count=2))

    for image in result.images:
        decoded = Image.open(io.BytesIO(image.data))
        assert decoded.size == PIXELS_AT_1K[aspect_ratio]
        assert (image.width, image.height) == PIXELS_AT_1K[aspect_ratio]
        assert image.mime_type == "image/png"
    assert [image.seed for image in result.images] == [7, 8]


def test_demo_mark_is_drawn_in_the_corner() -> None:
    image = render_image("white snow white", style=None, seed=1, size=(1024, 1024))
    corner = image.crop((900, 980, 1016, 1016))
    colours = {pixel for pixel in corner.get_flattened_data()}

    assert (0, 0, 0) in colours
    assert (255, 255, 255) in colours


def test_demo_path_never_imports_google_client(tmp_path: object) -> None:
    code = (
        "import asyncio, sys\n"
        "from app.generation.demo import DemoBackend\n"
        "from app.generation.backend import ImageSpec\n"
        "from app.generation.options import ImageSize\n"
        "spec = ImageSpec(prompt='p', model='demo', aspect_ratio='1:1', image_size=ImageSize.K1, count=1, seed=1)\n"
        "asyncio.run(DemoBackend().generate(spec))\n"
        "print('google.genai' in sys.modules)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert output.stdout.strip() == "False"
