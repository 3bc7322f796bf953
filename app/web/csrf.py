"""CSRF tokens: a signed double submit, bound to the browser's session.

The browser keeps a random value in an HttpOnly cookie. A page puts a token in each form (and in
a meta tag for script calls): the issue time and an HMAC over the cookie value, the session id
and that time, keyed with a key derived from SECRET_KEY. A request is accepted only when the
token matches the cookie it arrived with and the current session. Another site can neither
read the token nor compute one, and a cookie planted from a sibling domain is useless without
the matching token. Rotating the session id on log-in invalidates every older token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from app.errors import CsrfError

CSRF_COOKIE = "vc_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
TOKEN_MAX_AGE_S = 24 * 3600
COOKIE_MAX_AGE_S = 7 * 24 * 3600
COOKIE_VALUE_BYTES = 32
# A token issued this far in the future is rejected, allowing for clock steps between replicas.
CLOCK_SKEW_S = 300


class CsrfProtector:
    """Issues and checks tokens; holds only the derived key, so it is safe to share."""

    def __init__(self, secret_key: bytes, *, max_age_s: int = TOKEN_MAX_AGE_S) -> None:
        self._key = hmac.new(secret_key, b"visioncraft csrf token", hashlib.sha256).digest()
        self.max_age_s = max_age_s

    @staticmethod
    def new_cookie_value() -> str:
        return secrets.token_urlsafe(COOKIE_VALUE_BYTES)

    def _mac(self, cookie_value: str, session_id: str, issued_at: int) -> str:
        message = f"{cookie_value}\x00{session_id}\x00{issued_at}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def issue(self, cookie_value: str, session_id: str = "", *, now: float | None = None) -> str:
        """Return a token for forms of the browser holding `cookie_value` in `session_id`."""
        issued_at = int(time.time() if now is None else now)
        return f"{issued_at}.{self._mac(cookie_value, session_id, issued_at)}"

    def verify(
        self,
        token: str | None,
        cookie_value: str | None,
        session_id: str = "",
        *,
        now: float | None = None,
    ) -> None:
        """Raise CsrfError unless `token` was issued for this cookie and session and is fresh."""
        if not cookie_value:
            raise CsrfError(
                "The browser sent no CSRF cookie. Allow cookies for this site, reload the page "
                "and send the form again.",
                code="missing_csrf_cookie",
            )
        if not token:
            raise CsrfError(
                "The request carries no CSRF token. Send forms from our pages, or send the "
                "page's token in the X-CSRF-Token header.",
                code="missing_csrf_token",
            )
        issued_text, _, mac = token.partition(".")
        if not issued_text.isdigit() or not hmac.compare_digest(
            mac, self._mac(cookie_value, session_id, int(issued_text))
        ):
            raise CsrfError(
                "The CSRF token does not match this browser session. Reload the page and send "
                "the form again.",
                code="invalid_csrf_token",
            )
        age_s = (time.time() if now is None else now) - int(issued_text)
        if age_s > self.max_age_s or age_s < -CLOCK_SKEW_S:
            raise CsrfError(
                "The page is too old to send this form. Reload the page and send it again.",
                code="expired_csrf_token",
            )
