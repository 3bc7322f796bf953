"""The web site's shared objects, built once per app from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from babel.support import NullTranslations
from starlette.requests import Request

from app.settings import Settings
from app.web.csrf import CsrfProtector
from app.web.docs import DocsLibrary
from app.web.i18n import SUPPORTED_LOCALES, load_translations
from app.web.rendering import PageRenderer, build_environment, request_locale
from app.web.static import StaticFiles


@dataclass
class WebSite:
    settings: Settings
    static: StaticFiles
    docs: DocsLibrary
    csrf: CsrfProtector
    translations: dict[str, NullTranslations]
    renderer: PageRenderer

    def translator(self, request: Request) -> NullTranslations:
        """Return the catalog of the request's language, for strings built outside templates."""
        return self.translations[request_locale(request).locale]


def build_site(settings: Settings) -> WebSite:
    """Hash the static files, compile the catalogs and render the Markdown pages (blocking)."""
    static = StaticFiles()
    translations = {locale: load_translations(locale) for locale in SUPPORTED_LOCALES}
    environments = {
        locale: build_environment(translations[locale], static, locale)
        for locale in SUPPORTED_LOCALES
    }
    base_url = settings.resolved_public_base_url
    csrf = CsrfProtector(settings.resolved_secret_key)
    renderer = PageRenderer(
        environments=environments,
        csrf=csrf,
        public_base_url=base_url,
        trusted_proxies=list(settings.trusted_proxies),
    )
    return WebSite(
        settings=settings,
        static=static,
        docs=DocsLibrary(base_url=base_url),
        csrf=csrf,
        translations=translations,
        renderer=renderer,
    )
