"""Languages of the pages: negotiation from the request, and the gettext catalogs.

English source strings are the message ids; `locales/messages.pot` lists them and
`locales/ja/LC_MESSAGES/messages.po` translates them. The `.po` files are compiled in memory at
start, so no build step produces `.mo` files.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from babel import negotiate_locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALES_DIR = Path(__file__).parent / "locales"
SUPPORTED_LOCALES = ("en", "ja")
DEFAULT_LOCALE = "en"
LOCALE_COOKIE = "vc_lang"
LOCALE_QUERY = "lang"
LOCALE_COOKIE_MAX_AGE_S = 365 * 24 * 3600
# Names shown on the language switch, each in its own language.
LOCALE_NAMES = {"en": "English", "ja": "日本語"}
MAX_ACCEPT_LANGUAGE_ITEMS = 20


def N_(message: str) -> str:
    """Mark `message` for extraction into the catalogs; it is translated where it is shown."""
    return message


@dataclass(frozen=True)
class LocaleChoice:
    """The language of one response, and whether the request asked to remember it."""

    locale: str
    remember: bool = False


def parse_accept_language(header: str | None) -> list[str]:
    """Return the language tags of an Accept-Language header, most preferred first."""
    if not header:
        return []
    weighted: list[tuple[float, int, str]] = []
    for position, item in enumerate(header.split(",")[:MAX_ACCEPT_LANGUAGE_ITEMS]):
        tag, _, params = item.strip().partition(";")
        tag = tag.strip()
        if not tag or tag == "*":
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            weighted.append((-quality, position, tag))
    return [tag for _, _, tag in sorted(weighted)]


def supported_locale(value: str | None) -> str | None:
    """Return `value` if it names a supported locale, else None."""
    return value if value in SUPPORTED_LOCALES else None


def choose_locale(
    *, query: str | None, cookie: str | None, accept_language: str | None
) -> LocaleChoice:
    """Pick the language: `?lang=` (remembered), then the cookie, then Accept-Language."""
    asked = supported_locale(query)
    if asked:
        return LocaleChoice(asked, remember=asked != cookie)
    remembered = supported_locale(cookie)
    if remembered:
        return LocaleChoice(remembered)
    preferred = parse_accept_language(accept_language)
    negotiated = negotiate_locale(preferred, list(SUPPORTED_LOCALES), sep="-")
    return LocaleChoice(negotiated or DEFAULT_LOCALE)


def load_translations(locale: str, locales_dir: Path = LOCALES_DIR) -> NullTranslations:
    """Compile the `.po` catalog of `locale` in memory; English uses the message ids as they are."""
    if locale == DEFAULT_LOCALE:
        return NullTranslations()
    path = locales_dir / locale / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as source:
        catalog = read_po(source, locale=locale)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)
