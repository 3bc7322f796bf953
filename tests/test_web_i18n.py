"""Languages of the pages: negotiation, the message catalogs, and no untranslated template text."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po

from app.web.i18n import (
    LOCALES_DIR,
    LocaleChoice,
    choose_locale,
    load_translations,
    parse_accept_language,
)
from app.web.rendering import TEMPLATES_DIR

REPOSITORY = Path(__file__).resolve().parents[1]
POT_FILE = LOCALES_DIR / "messages.pot"
JA_FILE = LOCALES_DIR / "ja" / "LC_MESSAGES" / "messages.po"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, []),
        ("", []),
        ("ja", ["ja"]),
        ("en-US,en;q=0.9,ja;q=0.8", ["en-US", "en", "ja"]),
        ("en;q=0.3, ja-JP", ["ja-JP", "en"]),
        ("fr;q=0, de", ["de"]),
        ("*, ja;q=0.5", ["ja"]),
        ("ja;q=bad, en", ["en"]),
    ],
)
def test_parse_accept_language(header: str | None, expected: list[str]) -> None:
    assert parse_accept_language(header) == expected


@pytest.mark.parametrize(
    ("query", "cookie", "accept", "expected"),
    [
        (None, None, None, LocaleChoice("en")),
        (None, None, "ja-JP,ja;q=0.9,en;q=0.8", LocaleChoice("ja")),
        (None, None, "fr-FR,ja;q=0.5", LocaleChoice("ja")),
        (None, None, "fr-FR,de", LocaleChoice("en")),
        (None, "ja", "en-US", LocaleChoice("ja")),
        (None, "xx", "ja", LocaleChoice("ja")),
        ("ja", None, "en", LocaleChoice("ja", remember=True)),
        ("en", "ja", "ja", LocaleChoice("en", remember=True)),
        ("ja", "ja", "en", LocaleChoice("ja", remember=False)),
        ("zz", "ja", "en", LocaleChoice("ja")),
    ],
)
def test_choose_locale(
    query: str | None, cookie: str | None, accept: str | None, expected: LocaleChoice
) -> None:
    assert choose_locale(query=query, cookie=cookie, accept_language=accept) == expected


def _extracted_message_ids() -> set[str]:
    method_map = [("app/web/**.py", "python"), ("app/web/templates/**.html", "jinja2")]
    options_map = {"app/web/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    keywords = {**DEFAULT_KEYWORDS, "N_": None}
    ids = set()
    for _filename, _line, message, _comments, _context in extract_from_dir(
        str(REPOSITORY), method_map, options_map, keywords=keywords
    ):
        ids.add(message[0] if isinstance(message, tuple) else message)
    return ids


def _catalog_ids(path: Path) -> set[str]:
    with path.open("rb") as source:
        catalog = read_po(source)
    return {
        message.id[0] if isinstance(message.id, tuple) else message.id
        for message in catalog
        if message.id
    }


def test_pot_lists_every_string_of_the_pages() -> None:
    extracted = _extracted_message_ids()
    listed = _catalog_ids(POT_FILE)

    assert extracted - listed == set(), "run `make messages` and translate the new strings"
    assert listed - extracted == set(), "run `make messages` to drop strings no longer used"


def test_japanese_catalog_translates_every_message() -> None:
    with JA_FILE.open("rb") as source:
        catalog = read_po(source, locale="ja")
    untranslated = [
        message.id
        for message in catalog
        if message.id
        and (
            message.fuzzy
            or not all(message.string if isinstance(message.string, tuple) else [message.string])
        )
    ]

    assert _catalog_ids(POT_FILE) - _catalog_ids(JA_FILE) == set()
    assert untranslated == []


def test_japanese_catalog_keeps_every_placeholder() -> None:
    with JA_FILE.open("rb") as source:
        catalog = read_po(source, locale="ja")
    problems = [
        (message.id, [str(error) for error in errors]) for message, errors in catalog.check()
    ]

    assert problems == []


def test_japanese_translations_load() -> None:
    translations = load_translations("ja")

    assert translations.gettext("Generator") == "ジェネレーター"
    assert translations.ngettext("%(num)s image generated.", "%(num)s images generated.", 3) == (
        "%(num)s 枚の画像を生成しました。"
    )


JINJA_CONSTRUCT = re.compile(r"{{.*?}}|{%.*?%}|{#.*?#}", re.DOTALL)
LETTER = re.compile(r"[^\W\d_]")
TEXT_ATTRIBUTES = {"alt", "title", "placeholder", "aria-label", "label"}


class VisibleTextFinder(HTMLParser):
    """Collects text and text attributes that a person would see, outside scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"script", "style"}:
            self._skip_depth += 1
        for name, value in attrs:
            if name in TEXT_ATTRIBUTES and value and LETTER.search(value):
                self.found.append(f"{tag}[{name}]={value!r}")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"script", "style"}:
            self._skip_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._skip_depth == 0 and LETTER.search(data):
            self.found.append(data.strip())


@pytest.mark.parametrize(
    "template", sorted(path.name for path in TEMPLATES_DIR.glob("*.html")), ids=str
)
def test_template_has_no_untranslated_text(template: str) -> None:
    source = (TEMPLATES_DIR / template).read_text(encoding="utf-8")
    finder = VisibleTextFinder()
    finder.feed(JINJA_CONSTRUCT.sub(" ", source))
    finder.close()

    assert finder.found == []
