"""Client spans for outbound HTTP calls made with httpx, on the app's own tracer provider.

`TracingTransport` wraps another transport: each request gets a CLIENT span with the stable HTTP
attributes and carries the `traceparent` of that span. The span records the URL without its
query string or user info, and no header, so keys sent in headers or queries never reach it.
"""

from __future__ import annotations

import httpx
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, StatusCode, TracerProvider

HTTP_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"})


class TracingTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, tracer_provider: TracerProvider) -> None:
        self.inner = inner
        self._tracer = tracer_provider.get_tracer(__name__)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        method = request.method if request.method in HTTP_METHODS else "_OTHER"
        url = request.url
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "server.address": url.host,
            "url.full": str(url.copy_with(query=None, fragment=None, username=None, password=None)),
        }
        if url.port is not None:
            attributes["server.port"] = url.port
        with self._tracer.start_as_current_span(
            "HTTP" if method == "_OTHER" else method,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            propagate.inject(request.headers)
            try:
                response = await self.inner.handle_async_request(request)
            except Exception as error:
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(StatusCode.ERROR)
                raise
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.set_attribute("error.type", str(response.status_code))
                span.set_status(StatusCode.ERROR)
            return response

    async def aclose(self) -> None:
        await self.inner.aclose()
