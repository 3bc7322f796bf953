"""Wire the pages into the app: routers and HTML error pages."""

from __future__ import annotations

from fastapi import FastAPI

from app.settings import Settings
from app.web import accounts, admin, contact, dashboard, pages
from app.web.errors import install_page_error_handlers
from app.web.site import build_site


def install_web(app: FastAPI, settings: Settings) -> None:
    """Add the pages and their error pages to `app`.

    main.py adds SecurityHeadersMiddleware and BrowserSessionMiddleware.
    """
    app.state.site = build_site(settings)
    app.include_router(pages.router)
    app.include_router(contact.router)
    app.include_router(accounts.router)
    app.include_router(dashboard.router)
    app.include_router(admin.router)
    install_page_error_handlers(app)
