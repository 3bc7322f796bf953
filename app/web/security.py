"""Security headers on every response, and the strict set on every HTML page."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.clients import Network, is_https

# Scripts only from our own files: no inline script, no eval. JSON-LD and other data blocks
# (`<script type="application/ld+json">`) are not executed, so this policy allows them.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "camera",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "payment",
        "usb",
    )
)
HSTS_MAX_AGE_S = 365 * 24 * 3600

EVERY_RESPONSE = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
}
HTML_RESPONSE = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "permissions-policy": PERMISSIONS_POLICY,
    "cross-origin-opener-policy": "same-origin",
}


class SecurityHeadersMiddleware:
    """Adds the headers above; HSTS too when the client came over HTTPS."""

    def __init__(self, app: ASGIApp, *, trusted_proxies: Sequence[Network] = ()) -> None:
        self.app = app
        self.trusted_proxies = list(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = is_https(HTTPConnection(scope), self.trusted_proxies)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_security_headers(MutableHeaders(scope=message), https=https)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def add_security_headers(headers: MutableHeaders, *, https: bool) -> None:
    """Add the headers above that are not set yet; the HTML set only to an HTML response."""
    for name, value in EVERY_RESPONSE.items():
        headers.setdefault(name, value)
    if headers.get("content-type", "").startswith("text/html"):
        for name, value in HTML_RESPONSE.items():
            headers.setdefault(name, value)
    if https:
        headers.setdefault("strict-transport-security", f"max-age={HSTS_MAX_AGE_S}")
