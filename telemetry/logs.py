"""Stdlib logging set up once, at the entry point: readable console lines or JSON lines.

Every record carries the request id and the current trace and span ids. Messages of the
OpenTelemetry SDK itself (export retries, full queues) are let through once a minute each, so a
collector that is down does not flood the log.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

# The current request's id, set by the app's request middleware; "-" outside a request.
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

# Attributes every LogRecord has; anything else was passed in `extra` and is written out.
_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)


SDK_MESSAGE_INTERVAL_S = 60.0
# HTTP clients that log every request at INFO: httpx with its full URL, query included, and
# the stripe SDK with each call (and request bodies at DEBUG).
QUIET_HTTP_CLIENT_LOGGERS = ("httpx", "httpx2", "stripe")


class RequestIdFilter(logging.Filter):
    """Adds `request_id`, `trace_id` and `span_id` (None outside a span) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = trace.format_trace_id(context.trace_id)
            record.span_id = trace.format_span_id(context.span_id)
        else:
            record.trace_id = None
            record.span_id = None
        return True


class SdkRepeatFilter(logging.Filter):
    """Lets each message of an `opentelemetry.*` logger through once per interval."""

    def __init__(self, interval_s: float = SDK_MESSAGE_INTERVAL_S) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._last_passed: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("opentelemetry"):
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        with self._lock:
            last = self._last_passed.get(key)
            if last is not None and now - last < self._interval_s:
                return False
            self._last_passed[key] = now
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, request, trace and span ids,
    extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", None),
            "span_id": getattr(record, "span_id", None),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"


def configure_logging(*, json_lines: bool, level: str = "INFO") -> None:
    """Send every log record to stdout, as JSON lines or as readable console lines."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(SdkRepeatFilter())
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(CONSOLE_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's own access log would repeat ours without the route and request id.
    logging.getLogger("uvicorn.access").disabled = True
    for name in QUIET_HTTP_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
