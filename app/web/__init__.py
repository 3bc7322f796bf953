"""Server-rendered pages in English and Japanese, their static files and their security."""

from __future__ import annotations

from fastapi import FastAPI

from app.settings import Settings
from app.web import contact, pages
from app.web.errors import install_page_error_handlers
from app.web.security import SecurityHeadersMiddleware
from app.web.site import build_site


def install_web(app: FastAPI, settings: Settings) -> None:
    """Add the pages, their error pages and the security headers to `app`."""
    app.state.site = build_site(settings)
    app.include_router(pages.router)
    app.include_router(contact.router)
    install_page_error_handlers(app)
    app.add_middleware(SecurityHeadersMiddleware, trusted_proxies=settings.trusted_proxies)
