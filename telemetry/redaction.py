"""A span processor that blanks secret query parameters in `url.query` as spans start.

FastAPI records the query string of each request and redacts only a few well-known signature
names. The app passes the names of its own secret parameters, such as the `signature` of signed
image URLs.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

REDACTED = "REDACTED"


class QueryRedactor(SpanProcessor):
    def __init__(self, parameter_names: Iterable[str]) -> None:
        self._names = frozenset(name.lower() for name in parameter_names)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        query = (span.attributes or {}).get("url.query")
        if not isinstance(query, str):
            return
        pairs = parse_qsl(query, keep_blank_values=True)
        if not any(name.lower() in self._names for name, _ in pairs):
            return
        redacted = [
            (name, REDACTED if name.lower() in self._names else value) for name, value in pairs
        ]
        span.set_attribute("url.query", urlencode(redacted))

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
