"""ASGI middleware: request and trace ids, the access log and the request body limit.

Written as plain ASGI rather than BaseHTTPMiddleware: it costs less per request and it never
cancels the handler when a client disconnects.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.accounts.limits import RateDecision
from app.api.problems import id_headers, problem_body
from telemetry.lifecycle import Lifecycle
from telemetry.logs import request_id_var

logger = logging.getLogger("visioncraft.access")

REQUEST_ID_HEADER = "x-request-id"
STARTING_RETRY_AFTER_S = 5
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def route_template(scope: Scope) -> str | None:
    """Return the matched route's full path template, such as `/api/v1/images/{image_id}`.

    FastAPI 0.137 and newer keep included routers nested, so `scope["route"].path` lacks the
    router's prefix; the full template is on the effective route context in `scope["fastapi"]`.
    """
    for value in scope.get("fastapi", {}).values():
        template = getattr(value, "path_format", None)
        if isinstance(template, str):
            return template
    route = scope.get("route")
    template = getattr(route, "path", None)
    if isinstance(template, str):
        return template
    # Routes added with `app.add_route` (such as /docs) leave only their endpoint in the scope.
    endpoint = scope.get("endpoint")
    if endpoint is not None and "app" in scope:
        for candidate in scope["app"].routes:
            if getattr(candidate, "endpoint", None) is endpoint:
                path = getattr(candidate, "path", None)
                return path if isinstance(path, str) else None
    return None


class BodyTooLargeError(HTTPException):
    """Raised from `receive` when the body passes the limit.

    An HTTPException, because FastAPI re-raises those from body parsing (other errors there
    become a 400), so the problem handler returns 413.
    """

    def __init__(self, max_body_bytes: int) -> None:
        super().__init__(413, body_too_large_detail(max_body_bytes))


def body_too_large_detail(max_body_bytes: int) -> str:
    return (
        f"The request body is larger than {max_body_bytes} bytes. Send a smaller body "
        "(prompts are limited in length; images are not uploaded)."
    )


def format_duration(seconds: float) -> str:
    """Write a duration as OpenAI's x-ratelimit-reset-* headers do: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 10) / 10:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


def rate_limit_headers(decision: RateDecision) -> list[tuple[bytes, bytes]]:
    """Describe a rate decision in the IETF RateLimit fields and OpenAI's x-ratelimit-* set.

    The IETF fields name each policy (the key's and the account's); OpenAI's set describes
    the one with the fewest requests left.
    """
    policies = ", ".join(
        f'"{state.policy}";q={state.limit};w={math.ceil(state.window_s)}'
        for state in decision.states
    )
    current = ", ".join(
        f'"{state.policy}";r={state.remaining};t={math.ceil(state.reset_s)}'
        for state in decision.states
    )
    tightest = min(decision.states, key=lambda state: (state.remaining, -state.reset_s))
    return [
        (b"ratelimit-policy", policies.encode()),
        (b"ratelimit", current.encode()),
        (b"x-ratelimit-limit-requests", str(tightest.limit).encode()),
        (b"x-ratelimit-remaining-requests", str(tightest.remaining).encode()),
        (b"x-ratelimit-reset-requests", format_duration(tightest.reset_s).encode()),
    ]


async def send_problem(
    send: Send, body: dict[str, Any], *, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Send a problem+json response from ASGI middleware, with its status from `body`."""
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": body["status"],
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


class RequestContextMiddleware:
    """Gives each request an id, limits its body size and writes one access log line.

    Every response carries `X-Request-ID` and, inside a trace, `traceresponse` with the trace id.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        quiet_paths: Iterable[str] = (),
        body_limits: Mapping[str, int] | None = None,
    ) -> None:
        """`body_limits` gives some paths their own limit in bytes instead of `max_body_bytes`."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.quiet_paths = frozenset(quiet_paths)
        self.body_limits = dict(body_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = self._incoming_request_id(scope) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.extend(
                    (name.encode(), value.encode())
                    for name, value in id_headers(request_id).items()
                    if name.encode() not in names
                )
                decision = scope["state"].get("rate_limit")
                if decision is not None:
                    headers += rate_limit_headers(decision)
                message = {**message, "headers": headers}
            await send(message)

        max_body_bytes = self.body_limits.get(scope["path"], self.max_body_bytes)
        try:
            declared = self._content_length(scope)
            if declared is not None and declared > max_body_bytes:
                await self._send_too_large(scope, send_with_id, max_body_bytes)
                return
            await self.app(scope, self._limited(receive, max_body_bytes), send_with_id)
        except BodyTooLargeError:
            if not response_started:
                await self._send_too_large(scope, send_with_id, max_body_bytes)
        finally:
            request_id_var.reset(token)
            if scope["path"] not in self.quiet_paths:
                self._log(scope, status, started, request_id)

    @staticmethod
    def _limited(receive: Receive, max_body_bytes: int) -> Receive:
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body_bytes:
                    raise BodyTooLargeError(max_body_bytes)
            return message

        return receive_limited

    @staticmethod
    def _incoming_request_id(scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                return candidate if REQUEST_ID_PATTERN.match(candidate) else None
        return None

    @staticmethod
    def _content_length(scope: Scope) -> int | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    @staticmethod
    async def _send_too_large(scope: Scope, send: Send, max_body_bytes: int) -> None:
        detail = body_too_large_detail(max_body_bytes)
        body = problem_body(Request(scope), status=413, code="request_too_large", detail=detail)
        await send_problem(send, body, headers=[(b"connection", b"close")])

    @staticmethod
    def _log(scope: Scope, status: int, started: float, request_id: str) -> None:
        route_path = route_template(scope) or "(unmatched)"
        duration_ms = (time.perf_counter() - started) * 1000
        logger.info(
            "%s %s %s %.1fms",
            scope["method"],
            route_path,
            status,
            duration_ms,
            extra={
                "http_method": scope["method"],
                "http_route": route_path,
                "http_status": status,
                "duration_ms": round(duration_ms, 2),
                "request_id": request_id,
            },
        )


class StartingGateMiddleware:
    """Responds with 503 `service_starting` until start-up has finished, except on `open_paths`.

    Kubernetes sends no traffic before readiness passes, but a client that calls a pod directly
    gets a clear response instead of an error from a database that is not migrated yet. After
    start-up, each request costs one attribute read.
    """

    def __init__(self, app: ASGIApp, *, lifecycle: Lifecycle, open_paths: Iterable[str]) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.lifecycle.is_starting
            or scope["path"] in self.open_paths
        ):
            await self.app(scope, receive, send)
            return
        body = problem_body(
            Request(scope),
            status=503,
            code="service_starting",
            title="Service starting",
            detail="The service is still starting: it waits for its database or its image "
            f"backend. Retry in {STARTING_RETRY_AFTER_S} seconds.",
        )
        await send_problem(
            send, body, headers=[(b"retry-after", str(STARTING_RETRY_AFTER_S).encode())]
        )
