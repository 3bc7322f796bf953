"""Documentation and legal pages written in Markdown under `docs/<locale>/`, rendered at start.

Raw HTML in the Markdown is escaped, so a page can hold nothing that the security policy would
block. `{{BASE_URL}}` in a file becomes the service's PUBLIC_BASE_URL, so examples can be pasted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.anchors import anchors_plugin

from app.web.i18n import SUPPORTED_LOCALES

# The repository's docs folder; a deployment copies it beside `app/`.
DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"
BASE_URL_MARK = "{{BASE_URL}}"
DESCRIPTION_MAX_CHARS = 160
# The Markdown pages, by name; each exists once per locale as docs/<locale>/<name>.md.
DOC_NAMES = ("guide", "quickstart", "terms", "privacy")


@dataclass(frozen=True)
class RenderedDoc:
    title: str
    description: str
    html: str
    source: str


def _plain_text(inline: Token) -> str:
    """Return the text of an inline token without its Markdown marks (links, code, emphasis)."""
    if not inline.children:
        return inline.content
    parts = []
    for child in inline.children:
        if child.type in {"text", "code_inline"}:
            parts.append(child.content)
        elif child.type in {"softbreak", "hardbreak"}:
            parts.append(" ")
    return "".join(parts)


def _first_text(tokens: list[Token], opening: str) -> str:
    for index, token in enumerate(tokens):
        if token.type == opening and index + 1 < len(tokens):
            return _plain_text(tokens[index + 1]).strip()
    return ""


def _shorten(text: str, max_chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


class DocsLibrary:
    """Every Markdown page in every locale, parsed once; missing files fail at start."""

    def __init__(self, *, base_url: str, root: Path = DOCS_DIR) -> None:
        self.root = root
        self._markdown = (
            MarkdownIt("commonmark", {"html": False})
            .enable("table")
            .use(anchors_plugin, min_level=2, max_level=3)
        )
        self._pages: dict[tuple[str, str], RenderedDoc] = {}
        for name in DOC_NAMES:
            for locale in SUPPORTED_LOCALES:
                path = root / locale / f"{name}.md"
                if not path.is_file():
                    raise FileNotFoundError(
                        f"the documentation page {path} is missing: every page in {DOC_NAMES} "
                        f"needs a Markdown file for each locale in {SUPPORTED_LOCALES}"
                    )
                source = path.read_text(encoding="utf-8").replace(BASE_URL_MARK, base_url)
                self._pages[name, locale] = self._render(source)

    def _render(self, source: str) -> RenderedDoc:
        tokens = self._markdown.parse(source)
        return RenderedDoc(
            title=_first_text(tokens, "heading_open"),
            description=_shorten(_first_text(tokens, "paragraph_open"), DESCRIPTION_MAX_CHARS),
            html=self._markdown.renderer.render(tokens, self._markdown.options, {}),
            source=source,
        )

    def get(self, name: str, locale: str) -> RenderedDoc:
        """Return a rendered page; KeyError for a name outside DOC_NAMES."""
        return self._pages[name, locale]
