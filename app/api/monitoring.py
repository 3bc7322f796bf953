"""Metrics routes: Prometheus at `/metrics` and the same numbers as JSON under the API.

Both need `Authorization: Bearer METRICS_TOKEN` when that setting is set. Prometheus sends it
with the `authorization` option of its scrape config.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.api.deps import ServicesDep, bearer_token
from app.errors import AuthenticationError
from telemetry import Telemetry, render_exposition, render_json

router = APIRouter(tags=["monitoring"])
api_router = APIRouter(prefix="/monitoring", tags=["monitoring"])


def get_telemetry(request: Request) -> Telemetry:
    telemetry: Telemetry = request.app.state.telemetry
    return telemetry


async def require_metrics_token(request: Request, services: ServicesDep) -> None:
    expected = services.settings.metrics_token
    if expected is None:
        return
    token = bearer_token(request)
    if token is None or not hmac.compare_digest(
        token.encode(), expected.get_secret_value().encode()
    ):
        raise AuthenticationError(
            "The metrics need `Authorization: Bearer <METRICS_TOKEN>`, the value of "
            "VISIONCRAFT_METRICS_TOKEN.",
            code="invalid_metrics_token",
        )


TelemetryDep = Annotated[Telemetry, Depends(get_telemetry)]
MetricsReader = Depends(require_metrics_token)


@router.get("/metrics", include_in_schema=False, dependencies=[MetricsReader])
async def prometheus_metrics(request: Request, telemetry: TelemetryDep) -> Response:
    """Return the Prometheus exposition, or OpenMetrics when the Accept header names it."""
    body, content_type = await asyncio.to_thread(
        render_exposition, telemetry.prometheus_registry, request.headers.get("accept")
    )
    return Response(content=body, media_type=content_type)


@api_router.get("/metrics", dependencies=[MetricsReader])
async def json_metrics(telemetry: TelemetryDep) -> dict[str, Any]:
    """Return every metric family with its samples, named and labelled as on `/metrics`."""
    return await asyncio.to_thread(render_json, telemetry.prometheus_registry)
