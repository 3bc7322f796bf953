"""HTML error pages for browsers; API clients keep getting problem+json."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from app.api import problems
from app.api.clients import is_https
from app.errors import PermissionDeniedError
from app.web.security import add_security_headers
from app.web.sessions import SessionRequired
from app.web.site import WebSite

logger = logging.getLogger(__name__)

# Paths whose clients are programs, which always get problem+json.
MACHINE_PREFIXES = ("/api/", "/metrics", "/openapi.json")


def wants_html(request: Request) -> bool:
    """Tell whether the request is a browser asking for a page rather than a program."""
    if request.url.path.startswith(MACHINE_PREFIXES):
        return False
    return "text/html" in request.headers.get("accept", "")


def _error_page(request: Request, status: int, *, code: str | None = None) -> Response:
    site: WebSite = request.app.state.site
    return site.renderer.render(
        request, "error.html", {"status": status, "code": code}, status_code=status
    )


async def handle_http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    if not wants_html(request):
        return await problems.handle_http_exception(request, error)
    response = _error_page(request, error.status_code)
    for name, value in (error.headers or {}).items():
        response.headers[name] = value
    return response


async def handle_permission_error(request: Request, error: Exception) -> Response:
    """Show a 403 page for a refused CSRF token or an admin page; programs get problem+json."""
    assert isinstance(error, PermissionDeniedError)
    if not wants_html(request):
        return await problems.handle_service_error(request, error)
    return _error_page(request, 403, code=error.instance_code)


async def handle_session_required(request: Request, error: Exception) -> Response:
    assert isinstance(error, SessionRequired)
    return RedirectResponse(error.login_url, status_code=303)


async def handle_unexpected_error(request: Request, error: Exception) -> Response:
    if not wants_html(request):
        return await problems.handle_unexpected_error(request, error)
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    response = _error_page(request, 500)
    # Starlette sends this response from outside every middleware, so add the headers here.
    site: WebSite = request.app.state.site
    add_security_headers(response.headers, https=is_https(request, site.settings.trusted_proxies))
    return response


def install_page_error_handlers(app: FastAPI) -> None:
    """Register after the problem handlers, so that browsers get pages instead."""
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(PermissionDeniedError, handle_permission_error)
    app.add_exception_handler(SessionRequired, handle_session_required)
    app.add_exception_handler(Exception, handle_unexpected_error)
