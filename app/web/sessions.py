"""Browser sessions on each request: the cookie, its lookup, and the login requirement.

`BrowserSessionMiddleware` resolves the session cookie before routing, so that pages, CSRF
tokens and the JSON API all see the same signed-in account. It sets three values in
`request.state`: `session_account` (a SessionAccount, or None), `session_id` (which binds CSRF
tokens) and `session_token` (the cookie value, for log-out and rotation).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.accounts.sessions import BrowserSessionService, SessionAccount
from app.api.clients import Network, is_https
from app.errors import PermissionDeniedError

SESSION_COOKIE = "vc_session"
# Paths that never need the account: skipping them saves a database read per static file.
UNSESSIONED_PREFIXES = ("/static/", "/metrics", "/api/v1/monitoring/", "/favicon.ico")


def current_session(request: Request) -> SessionAccount | None:
    """Return the signed-in account of this request, or None for a visitor."""
    found = getattr(request.state, "session_account", None)
    return found if isinstance(found, SessionAccount) else None


def set_session_cookie(
    request: Request,
    response: Response,
    token: str,
    *,
    max_age_s: int,
    trusted_proxies: Sequence[Network],
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age_s,
        httponly=True,
        samesite="lax",
        secure=is_https(request, trusted_proxies),
        path="/",
    )


def clear_session_cookie(
    request: Request, response: Response, *, trusted_proxies: Sequence[Network]
) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        httponly=True,
        samesite="lax",
        secure=is_https(request, trusted_proxies),
        path="/",
    )


def login_url(request: Request) -> str:
    """Return the log-in page's URL that comes back to this page afterwards."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/login?{urlencode({'next': target})}"


def safe_next(target: str | None, default: str = "/dashboard") -> str:
    """Return `target` if it is a path on this site, else `default`; no open redirects."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    return target


class SessionRequired(Exception):
    """A page for signed-in accounts was asked for without a session; the handler redirects."""

    def __init__(self, request: Request) -> None:
        super().__init__(request.url.path)
        self.login_url = login_url(request)


async def require_session(request: Request) -> SessionAccount:
    """Return the signed-in account, or send a visitor to the log-in page and back."""
    session = current_session(request)
    if session is None:
        raise SessionRequired(request)
    return session


async def require_admin_session(request: Request) -> SessionAccount:
    """Return the signed-in admin; a visitor goes to log in, any other account gets 403."""
    session = await require_session(request)
    if session.role != "admin":
        raise PermissionDeniedError(
            "Only an admin account may open the admin pages.", code="admin_only"
        )
    return session


class BrowserSessionMiddleware:
    """Looks up the session cookie of each request and clears a cookie whose session ended.

    Requests with an Authorization header are API calls with a key, which wins over a cookie.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        sessions: BrowserSessionService,
        trusted_proxies: Sequence[Network] = (),
    ) -> None:
        self.app = app
        self.sessions = sessions
        self.trusted_proxies = list(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(UNSESSIONED_PREFIXES):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        token = connection.cookies.get(SESSION_COOKIE)
        state = scope.setdefault("state", {})
        state.setdefault("session_account", None)
        if not token or "authorization" in connection.headers:
            await self.app(scope, receive, send)
            return

        found = await self.sessions.resolve(token)
        if found is not None:
            state.update(session_account=found, session_id=found.session_id, session_token=token)
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self._clearing_cookie(connection, send))

    def _clearing_cookie(self, connection: HTTPConnection, send: Send) -> Send:
        secure = "; secure" if is_https(connection, self.trusted_proxies) else ""

        async def send_clearing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if SESSION_COOKIE + "=" not in "".join(headers.getlist("set-cookie")):
                    headers.append(
                        "set-cookie",
                        f'{SESSION_COOKIE}=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; '
                        f"Max-Age=0; Path=/; HttpOnly; SameSite=lax{secure}",
                    )
            await send(message)

        return send_clearing
