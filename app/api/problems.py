"""RFC 9457 problem details: the one place where errors become HTTP responses.

Every error body is `application/problem+json` with `type`, `title`, `status`, `detail`,
`instance`, a stable `code` and the `request_id`, plus an `error` member in OpenAI's shape
(`message`, `type`, `param`, `code`) so that OpenAI clients raise their typed exceptions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import trace
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import (
    AuthenticationError,
    BillingUnavailableError,
    CapacityExceededError,
    ConflictError,
    ContentPolicyViolation,
    ImageStoreUnavailableError,
    InsufficientCreditsError,
    InvalidRequestError,
    MailError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServiceError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    WebhookRejectedError,
)

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
ERRORS_PAGE = "/docs/errors"

STATUS_BY_ERROR: dict[type[ServiceError], int] = {
    InvalidRequestError: 422,
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    ContentPolicyViolation: 422,
    RateLimitedError: 429,
    InsufficientCreditsError: 402,
    CapacityExceededError: 503,
    UpstreamError: 502,
    UpstreamUnavailableError: 503,
    ImageStoreUnavailableError: 503,
    MailError: 503,
    UpstreamTimeoutError: 504,
    BillingUnavailableError: 503,
    WebhookRejectedError: 400,
}

# OpenAI's error `type` for each status, which its clients and tooling look at.
OPENAI_TYPE_BY_STATUS = {
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}

# Answers that mean a customer hit a limit; each one is counted by status and code.
COUNTED_STATUSES = frozenset({402, 429, 503})

TITLE_BY_STATUS = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid request",
    500: "Internal server error",
}


def id_headers(request_id: str | None) -> dict[str, str]:
    """`X-Request-ID` and, inside a trace, the W3C `traceresponse` with the trace id."""
    headers = {"x-request-id": request_id} if request_id else {}
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        headers["traceresponse"] = (
            f"00-{trace.format_trace_id(context.trace_id)}-"
            f"{trace.format_span_id(context.span_id)}-{int(context.trace_flags):02x}"
        )
    return headers


def status_for(error: ServiceError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


def problem_body(
    request: Request,
    *,
    status: int,
    code: str,
    detail: str,
    title: str | None = None,
    param: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    request_id = getattr(request.state, "request_id", None)
    default_type = "server_error" if status >= 500 else "invalid_request_error"
    openai_type = OPENAI_TYPE_BY_STATUS.get(status, default_type)
    base_url = getattr(request.app.state, "public_base_url", "") if "app" in request.scope else ""
    body: dict[str, Any] = {
        "type": f"{base_url}{ERRORS_PAGE}#{code}",
        "title": title or TITLE_BY_STATUS.get(status, "Request failed"),
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "code": code,
        "request_id": request_id,
    }
    if errors:
        body["errors"] = list(errors)
    if extra:
        body.update({key: value for key, value in extra.items() if key not in body})
    body["error"] = {"message": detail, "type": openai_type, "param": param, "code": code}
    return body


def problem_response(
    request: Request,
    *,
    status: int,
    code: str,
    detail: str,
    title: str | None = None,
    param: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = problem_body(
        request,
        status=status,
        code=code,
        detail=detail,
        title=title,
        param=param,
        errors=errors,
        extra=extra,
    )
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE
    )


async def handle_service_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServiceError)
    status = status_for(error)
    headers: dict[str, str] = {}
    if isinstance(error, AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="visioncraft", error="invalid_token"'
        if error.instance_code == "missing_api_key":
            headers["WWW-Authenticate"] = 'Bearer realm="visioncraft"'
    retry_after_s = getattr(error, "retry_after_s", None)
    if isinstance(retry_after_s, int | float):
        headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    param = error.field if isinstance(error, InvalidRequestError) else None
    errors = [{"field": param, "message": error.detail}] if param else None
    extra = dict(error.extra)
    if isinstance(retry_after_s, int | float):
        extra.setdefault("retry_after_s", max(1, math.ceil(retry_after_s)))
    if status in COUNTED_STATUSES:
        _count_rejection(request, status, error.instance_code)
    return problem_response(
        request,
        status=status,
        code=error.instance_code,
        title=error.title,
        detail=error.detail,
        param=param,
        errors=errors,
        extra=extra,
        headers=headers,
    )


def _count_rejection(request: Request, status: int, code: str) -> None:
    """Count a 402, 429 or 503 answer by its code, for the alerts on credits and limits."""
    recorder = getattr(request.app.state, "rejection_recorder", None)
    if recorder is not None:
        recorder(status, code)


def _field_name(location: Sequence[Any]) -> str:
    parts = [str(part) for part in location]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    return ".".join(parts) or "body"


def _clean_message(message: str) -> str:
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _accepted_fields(request: Request) -> list[str]:
    """Return the body fields of the matched route, to name them when an unknown one arrives."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(body_field, "field_info", None), "annotation", None)
    fields = getattr(model, "model_fields", None)
    return list(fields) if isinstance(fields, dict) else []


def _describe(item: Mapping[str, Any], field: str, accepted: Sequence[str]) -> str:
    """Say what is wrong with one field in words a client can act on, showing the bad value."""
    kind = item.get("type")
    value = item.get("input")
    if kind == "missing" and field == "body":
        return "the request body is empty; send a JSON object with at least `prompt`"
    if kind == "missing":
        return f"`{field}` is required"
    if kind == "extra_forbidden":
        known = f"; the accepted fields are {', '.join(accepted)}" if accepted else ""
        return f"`{field}` is not a field of this request{known}"
    message = _clean_message(str(item.get("msg", "invalid value")))
    shown = repr(value) if isinstance(value, str) else str(value)
    if isinstance(value, int | float | str) and len(shown) <= 40 and shown not in message:
        message = f"{message} (got {shown})"
    return message


async def handle_validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = list(error.errors())
    content_type = request.headers.get("content-type")
    if request.method in {"POST", "PUT", "PATCH"} and not _is_json(content_type):
        shown = (
            f"Content-Type {content_type!r} is not accepted"
            if content_type
            else ("The request has no Content-Type header")
        )
        return problem_response(
            request,
            status=415,
            code="unsupported_media_type",
            detail=f"{shown}: send the body as JSON with `Content-Type: application/json`.",
        )
    if any(item.get("type") == "json_invalid" for item in problems):
        reason = next(item for item in problems if item.get("type") == "json_invalid")
        context = reason.get("ctx") or {}
        location = reason.get("loc", ())
        # FastAPI puts the parser's character offset after "body" in the location.
        where = f" at character {location[1]}" if len(location) > 1 else ""
        return problem_response(
            request,
            status=400,
            code="invalid_json",
            detail=f"The request body is not valid JSON ({context.get('error', 'parse error')}"
            f"{where}). Send a JSON object.",
        )
    accepted = _accepted_fields(request)
    fields = []
    for item in problems:
        field = _field_name(item.get("loc", ()))
        fields.append(
            {"field": field, "message": _describe(item, field, accepted), "type": item.get("type")}
        )
    first = fields[0]
    others = len(fields) - 1
    more = (
        f" ({others} more {'problem' if others == 1 else 'problems'} in `errors`)" if others else ""
    )
    return problem_response(
        request,
        status=422,
        code="validation_error",
        detail=f"Invalid `{first['field']}`: {first['message']}{more}",
        param=str(first["field"]),
        errors=fields,
    )


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def handle_http_exception(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    status = error.status_code
    if status == 400 and error.detail == "There was an error parsing the body":
        # FastAPI's answer to a body it cannot decode, such as bytes that are not UTF-8.
        detail = "The request body could not be read: send a JSON object encoded as UTF-8."
        code = "invalid_json"
    elif status == 404:
        detail = (
            f"No route matches {request.method} {request.url.path}. See the API reference at /docs."
        )
        code = "route_not_found"
    elif status == 413:
        detail = str(error.detail)
        code = "request_too_large"
    elif status == 405:
        allowed = (error.headers or {}).get("Allow")
        use = f" Use {allowed}." if allowed else ""
        detail = f"{request.method} is not allowed on {request.url.path}.{use}"
        code = "method_not_allowed"
    else:
        detail = str(error.detail)
        code = TITLE_BY_STATUS.get(status, "http_error").lower().replace(" ", "_")
    return problem_response(
        request, status=status, code=code, detail=detail, headers=dict(error.headers or {})
    )


async def handle_unexpected_error(request: Request, error: Exception) -> JSONResponse:
    # This runs outside the request middleware, which has already reset the request id.
    request_id = getattr(request.state, "request_id", None)
    logger.error(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        exc_info=error,
        extra={"request_id": request_id or "-"},
    )
    return problem_response(
        request,
        status=500,
        code="internal_error",
        detail="The server failed to complete the request. It was logged; quote the request_id "
        "when you contact support.",
        headers=id_headers(request_id),
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, handle_service_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(Exception, handle_unexpected_error)
