"""The example pictures on the landing page, drawn by the demo backend and committed.

Redraw them after changing the demo renderer or this list:
`.venv/bin/python -m app.web.examples`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.generation.demo import render_image
from app.web.i18n import N_
from app.web.static import STATIC_DIR

EXAMPLE_SIZE = (512, 512)
OPENGRAPH_SIZE = (1200, 630)
WEBP_QUALITY = 80


@dataclass(frozen=True)
class ExampleImage:
    """A picture drawn from `prompt`, which is also its alt text once translated."""

    file: str
    prompt: str
    style: str
    seed: int


EXAMPLES = (
    ExampleImage(
        "img/examples/lighthouse.webp", N_("A lighthouse on a cliff at sunset"), "cinematic", 7
    ),
    ExampleImage("img/examples/forest.webp", N_("A green forest by a blue lake"), "watercolor", 3),
    ExampleImage("img/examples/city.webp", N_("A purple city skyline at night"), "pixel-art", 11),
    ExampleImage("img/examples/garden.webp", N_("A pink garden in the snow"), "oil-painting", 5),
)


def draw_examples(static_dir: Path = STATIC_DIR) -> None:
    """Draw every example and the OpenGraph preview picture into the static folder."""
    for example in EXAMPLES:
        image = render_image(
            example.prompt, style=example.style, seed=example.seed, size=EXAMPLE_SIZE
        )
        target = static_dir / example.file
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, format="WEBP", quality=WEBP_QUALITY, method=6)
    preview = render_image(
        "VisionCraftAI violet sky gold", style="digital-art", seed=1, size=OPENGRAPH_SIZE
    )
    preview.save(static_dir / "img" / "og-image.png", format="PNG", optimize=True)
    icon = render_image("violet gold", style=None, seed=2, size=(64, 64)).resize((32, 32))
    icon.save(static_dir / "img" / "favicon.ico", format="ICO", sizes=[(32, 32)])


if __name__ == "__main__":
    draw_examples()
