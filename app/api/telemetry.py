"""How FastAPI's own OpenTelemetry support is set up for this app.

FastAPI records the HTTP server span, the stable `http.server.request.duration` (seconds) and
`http.server.active_requests` on the providers we pass. It labels each route by its full
template and leaves `http.route` out for paths that match no route, so unknown paths add no
series.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fastapi.telemetry import TelemetryConfig
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from telemetry import Telemetry

LIVENESS_PATH = "/api/v1/monitoring/liveness"
READINESS_PATH = "/api/v1/monitoring/readiness"
# Scrapes and probes come every few seconds; spans and latency series of them tell nothing.
UNOBSERVED_PATHS = frozenset({"/metrics", LIVENESS_PATH, READINESS_PATH})
# FastAPI's boundaries stop at 10 s; generations run up to REQUEST_TIMEOUT_S (90 s by default).
HTTP_DURATION_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
)  # fmt: skip


def is_unobserved(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in UNOBSERVED_PATHS


def http_duration_buckets(request_timeout_s: float) -> tuple[float, ...]:
    """Return the boundaries, with one more past the request timeout when that is over 120 s."""
    if request_timeout_s < HTTP_DURATION_BUCKETS_S[-1]:
        return HTTP_DURATION_BUCKETS_S
    return (*HTTP_DURATION_BUCKETS_S, float(request_timeout_s) * 1.5)


def http_views(request_timeout_s: float) -> list[View]:
    return [
        View(
            instrument_name="http.server.request.duration",
            aggregation=ExplicitBucketHistogramAggregation(
                http_duration_buckets(request_timeout_s)
            ),
        )
    ]


def fastapi_telemetry(telemetry: Telemetry) -> TelemetryConfig:
    """FastAPI's telemetry on the app's providers.

    FastAPI's log events are off: stdlib logging already reaches OTLP through the log bridge,
    and errors would be sent twice. Operation spans (dependencies, endpoint, serialization) are
    off: they cost throughput on every request and the generation span covers the slow part.
    """
    return {
        "tracer_provider": telemetry.tracer_provider,
        "meter_provider": telemetry.meter_provider,
        "logs": False,
        "operation_spans": False,
        "auto_configure": False,
        "exclude": is_unobserved,
    }
