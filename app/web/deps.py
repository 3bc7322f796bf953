"""FastAPI dependencies of the pages: the site objects and the CSRF check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.web.csrf import CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER
from app.web.rendering import browser_session_id
from app.web.site import WebSite


def get_site(request: Request) -> WebSite:
    site: WebSite = request.app.state.site
    return site


SiteDep = Annotated[WebSite, Depends(get_site)]


async def require_csrf(request: Request, site: SiteDep) -> None:
    """Reject the request with CsrfError unless it carries this browser's CSRF token.

    Forms send the token in the `csrf_token` field; scripts send it in the X-CSRF-Token header.
    Use it on every form post and on every API route that a session cookie authenticates.
    """
    token = request.headers.get(CSRF_HEADER)
    if token is None and _is_form(request.headers.get("content-type")):
        value = (await request.form()).get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    site.csrf.verify(token, request.cookies.get(CSRF_COOKIE), browser_session_id(request))


def _is_form(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type in {"application/x-www-form-urlencoded", "multipart/form-data"}


CsrfDep = Depends(require_csrf)
