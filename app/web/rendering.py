"""Rendering pages: one Jinja2 environment per language, and the context every page shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from babel.numbers import format_decimal
from babel.support import NullTranslations
from starlette.requests import Request
from starlette.responses import HTMLResponse

from app.api.clients import Network, is_https
from app.web.csrf import COOKIE_MAX_AGE_S, CSRF_COOKIE, CsrfProtector
from app.web.i18n import (
    LOCALE_COOKIE,
    LOCALE_COOKIE_MAX_AGE_S,
    LOCALE_NAMES,
    LOCALE_QUERY,
    SUPPORTED_LOCALES,
    LocaleChoice,
    choose_locale,
)
from app.web.static import StaticFiles

TEMPLATES_DIR = Path(__file__).parent / "templates"
PAGE_CACHE_CONTROL = "private, no-cache"
PRODUCT_NAME = "VisionCraftAI"
OPENGRAPH_LOCALES = {"en": "en_US", "ja": "ja_JP"}


def build_environment(
    translations: NullTranslations, static: StaticFiles, locale: str = "en"
) -> jinja2.Environment:
    """Build the template environment of one language; every template is autoescaped.

    The `number` filter writes an integer with the language's digit grouping ("15,000").
    """
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    environment.globals["static"] = static.url
    environment.globals["product_name"] = PRODUCT_NAME
    environment.globals["og_locales"] = OPENGRAPH_LOCALES
    environment.filters["number"] = lambda value: format_decimal(value, locale=locale)
    return environment


def request_locale(request: Request) -> LocaleChoice:
    """Return the language of this request's page, deciding it once per request."""
    cached = getattr(request.state, "locale_choice", None)
    if isinstance(cached, LocaleChoice):
        return cached
    choice = choose_locale(
        query=request.query_params.get(LOCALE_QUERY),
        cookie=request.cookies.get(LOCALE_COOKIE),
        accept_language=request.headers.get("accept-language"),
    )
    request.state.locale_choice = choice
    return choice


def browser_session_id(request: Request) -> str:
    """Return the id of the signed-in browser session, or "" for a visitor without one.

    BrowserSessionMiddleware sets `request.state.session_id`, which binds every CSRF token to
    that session, so a token issued before log-in is refused after it.
    """
    session_id = getattr(request.state, "session_id", "")
    return session_id if isinstance(session_id, str) else ""


@dataclass
class PageRenderer:
    """Turns a template and its values into an HTML response with cookies and headers set."""

    environments: Mapping[str, jinja2.Environment]
    csrf: CsrfProtector
    public_base_url: str
    trusted_proxies: list[Network]

    @staticmethod
    def locale_of(request: Request) -> str:
        return request_locale(request).locale

    def page_url(self, path: str, locale: str | None = None) -> str:
        """Return the absolute URL of a page, in one language when `locale` is given."""
        query = f"?{urlencode({LOCALE_QUERY: locale})}" if locale else ""
        return f"{self.public_base_url}{path}{query}"

    def csrf_cookie(self, request: Request) -> tuple[str, bool]:
        """Return the browser's CSRF cookie value, and whether it is new and must be set."""
        existing = request.cookies.get(CSRF_COOKIE)
        if existing:
            return existing, False
        cached = getattr(request.state, "new_csrf_cookie", None)
        if isinstance(cached, str):
            return cached, True
        value = self.csrf.new_cookie_value()
        request.state.new_csrf_cookie = value
        return value, True

    def render(
        self,
        request: Request,
        template: str,
        values: Mapping[str, Any] | None = None,
        *,
        status_code: int = 200,
    ) -> HTMLResponse:
        choice = request_locale(request)
        cookie_value, new_cookie = self.csrf_cookie(request)
        path = request.url.path
        context = {
            "request": request,
            "locale": choice.locale,
            "locales": [(code, LOCALE_NAMES[code]) for code in SUPPORTED_LOCALES],
            "path": path,
            "canonical_url": self.page_url(path, choice.locale),
            "alternate_urls": {code: self.page_url(path, code) for code in SUPPORTED_LOCALES},
            "default_url": self.page_url(path),
            "base_url": self.public_base_url,
            "csrf_token": self.csrf.issue(cookie_value, browser_session_id(request)),
            "viewer": getattr(request.state, "session_account", None),
            **(values or {}),
        }
        html = self.environments[choice.locale].get_template(template).render(context)
        response = HTMLResponse(html, status_code=status_code)
        response.headers["Content-Language"] = choice.locale
        response.headers["Vary"] = "Accept-Language, Cookie"
        response.headers["Cache-Control"] = PAGE_CACHE_CONTROL
        self._set_cookies(request, response, choice, cookie_value if new_cookie else None)
        return response

    def _set_cookies(
        self,
        request: Request,
        response: HTMLResponse,
        choice: LocaleChoice,
        new_csrf_cookie: str | None,
    ) -> None:
        secure = is_https(request, self.trusted_proxies)
        if choice.remember:
            response.set_cookie(
                LOCALE_COOKIE,
                choice.locale,
                max_age=LOCALE_COOKIE_MAX_AGE_S,
                secure=secure,
                httponly=True,
                samesite="lax",
            )
        if new_csrf_cookie is not None:
            response.set_cookie(
                CSRF_COOKIE,
                new_csrf_cookie,
                max_age=COOKIE_MAX_AGE_S,
                secure=secure,
                httponly=True,
                samesite="lax",
            )
