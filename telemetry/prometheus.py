"""The Prometheus registry of an app, rendered as the exposition format or as JSON.

Both read the same `PrometheusMetricReader`, so `/metrics` and the JSON route show the same
numbers. Rendering collects every metric and formats it: callers run it off the event loop.
"""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder


def render_exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """Return the registry in the format that the Accept header requests, and its content type.

    The format is OpenMetrics when the header names `application/openmetrics-text`, else the
    Prometheus text format.
    """
    encoder, content_type = choose_encoder(accept or "")
    body: bytes = encoder(registry)
    return body, str(content_type)


def render_json(registry: CollectorRegistry) -> dict[str, Any]:
    """Return every metric family with its samples, as Prometheus names and labels them."""
    families = [
        {
            "name": family.name,
            "type": family.type,
            "unit": family.unit,
            "help": family.documentation,
            "samples": [
                {"name": sample.name, "labels": dict(sample.labels), "value": _number(sample.value)}
                for sample in family.samples
            ],
        }
        for family in registry.collect()
    ]
    return {"metrics": families}


def _number(value: float) -> float | str:
    # JSON has no NaN or infinity; Prometheus writes them as these strings.
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value
