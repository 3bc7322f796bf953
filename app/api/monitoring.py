"""Monitoring routes: Kubernetes probes, the health report and the metrics.

- `liveness` responds with 200 whenever the process and its event loop run. It checks no
  dependency, so an outage of the database does not make Kubernetes restart every pod.
- `readiness` responds with 200 while the process serves and every critical check passes, else
  with 503 naming what fails. It reads the cached health report and does not wait for a refresh.
- `health` is the report in the IETF health check format; admins see the details.
- `/metrics` is Prometheus's, and `metrics` the same numbers as JSON. Both need
  `Authorization: Bearer METRICS_TOKEN` when that setting is set; Prometheus sends it with the
  `authorization` option of its scrape config.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from app.accounts.keys import Scope
from app.accounts.sessions import SessionAccount
from app.api.deps import ServicesDep, bearer_token
from app.api.telemetry import LIVENESS_PATH, READINESS_PATH
from app.errors import AuthenticationError
from telemetry import Telemetry, render_exposition, render_json
from telemetry.health import HealthChecker, HealthReport
from telemetry.health_document import (
    HEALTH_MEDIA_TYPE,
    ServiceDescription,
    SystemProbe,
    brief_document,
    detailed_document,
)
from telemetry.lifecycle import Lifecycle, ServingPhase

router = APIRouter(tags=["monitoring"])
api_router = APIRouter(prefix="/monitoring", tags=["monitoring"])

HEALTH_PATH = "/api/v1/monitoring/health"
JSON_METRICS_PATH = "/api/v1/monitoring/metrics"
# Routes that work while the service is still starting.
MONITORING_PATHS = frozenset(
    {"/metrics", LIVENESS_PATH, READINESS_PATH, HEALTH_PATH, JSON_METRICS_PATH}
)
NO_STORE = {"Cache-Control": "no-store"}
PASS_BODY = b'{"status":"pass"}'
ADMIN_NOTE = (
    "Observed values, versions and system facts need an API key with the admin scope of an "
    "admin account."
)
PHASE_OUTPUT = {
    ServingPhase.STARTING: "starting",
    ServingPhase.DRAINING: "draining: the process is shutting down",
    ServingPhase.STOPPING: "stopping: the process is shutting down",
}


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


async def refresh_health_metrics(request: Request) -> None:
    """Start a run of the health checks when their report is stale, without waiting for it.

    The health check gauges show the latest report, and without probes (Docker Compose has
    none) nothing else would refresh it. A scrape therefore shows the report that the previous
    scrape started, or a newer one.
    """
    checker: HealthChecker = request.app.state.health
    checker.refresh_in_background()


MetricsReader = Depends(require_metrics_token)
HealthRefresh = Depends(refresh_health_metrics)


@router.get("/metrics", include_in_schema=False, dependencies=[MetricsReader, HealthRefresh])
async def prometheus_metrics(request: Request, telemetry: TelemetryDep) -> Response:
    """Return the Prometheus exposition, or OpenMetrics when the Accept header names it."""
    body, content_type = await asyncio.to_thread(
        render_exposition, telemetry.prometheus_registry, request.headers.get("accept")
    )
    return Response(content=body, media_type=content_type)


@api_router.get("/metrics", dependencies=[MetricsReader, HealthRefresh])
async def json_metrics(telemetry: TelemetryDep) -> dict[str, Any]:
    """Return every metric family with its samples, named and labelled as on `/metrics`."""
    return await asyncio.to_thread(render_json, telemetry.prometheus_registry)


def health_response(document: dict[str, Any], status_code: int) -> Response:
    return Response(
        content=json.dumps(document),
        status_code=status_code,
        media_type=HEALTH_MEDIA_TYPE,
        headers=NO_STORE,
    )


@api_router.api_route("/liveness", methods=["GET", "HEAD"], response_class=Response)
async def liveness() -> Response:
    """Return 200 while the process and its event loop run; no dependency is checked."""
    return Response(content=PASS_BODY, media_type=HEALTH_MEDIA_TYPE, headers=NO_STORE)


@api_router.api_route("/readiness", methods=["GET", "HEAD"], response_class=Response)
async def readiness(request: Request) -> Response:
    """Return 200 while serving with every critical check passing; 503 names what fails."""
    lifecycle: Lifecycle = request.app.state.lifecycle
    checker: HealthChecker = request.app.state.health
    if not lifecycle.is_serving:
        problem = lifecycle.startup_problem if lifecycle.is_starting else None
        output = PHASE_OUTPUT[lifecycle.phase]
        if problem is not None:
            output = f"starting: waiting for the {problem.component}"
        failing = [problem.component] if problem is not None else []
        return health_response({"status": "fail", "output": output, "failing": failing}, 503)
    report = checker.latest
    if report is None:
        report = await checker.report()
    elif not checker.is_fresh(report):
        checker.refresh_in_background()
    failing = list(report.failing_critical)
    if failing:
        output = f"critical checks fail: {', '.join(failing)}"
        return health_response({"status": "fail", "output": output, "failing": failing}, 503)
    return Response(content=PASS_BODY, media_type=HEALTH_MEDIA_TYPE, headers=NO_STORE)


class ProbeResponder:
    """Handles GET and HEAD of the two probes before the session middleware and the router.

    Kubernetes probes every pod every few seconds, and a probe must stay fast while the pod is
    busy. Their routes stay registered, so they appear in the OpenAPI document, and the router
    returns 405 for any other method.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            if scope["path"] == LIVENESS_PATH:
                response = await liveness()
                await response(scope, receive, send)
                return
            if scope["path"] == READINESS_PATH:
                response = await readiness(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


@api_router.get("/health", response_class=Response)
async def health(request: Request, services: ServicesDep) -> Response:
    """Return the health report: each check's status, and for admins the details.

    Pass and warn return 200, fail returns 503.
    """
    checker: HealthChecker = request.app.state.health
    report = await checker.report()
    notes = _phase_notes(request.app.state.lifecycle)
    is_admin, auth_note = await _caller_is_admin(request, services)
    if auth_note:
        notes.append(auth_note)
    if is_admin:
        document = await _detailed(request, checker, report, notes)
    else:
        document = brief_document(report, notes=[*notes, ADMIN_NOTE])
    return health_response(document, 503 if document["status"] == "fail" else 200)


async def _detailed(
    request: Request, checker: HealthChecker, report: HealthReport, notes: list[str]
) -> dict[str, Any]:
    probe: SystemProbe = request.app.state.system_probe
    service: ServiceDescription = request.app.state.service_description
    system = await checker.run_blocking(probe.read)
    return detailed_document(report, service=service, system=system, notes=notes)


def _phase_notes(lifecycle: Lifecycle) -> list[str]:
    if lifecycle.is_serving:
        return []
    problem = lifecycle.startup_problem if lifecycle.is_starting else None
    if problem is not None:
        return [f"starting: waiting for the {problem.component}"]
    return [PHASE_OUTPUT[lifecycle.phase]]


async def _caller_is_admin(request: Request, services: ServicesDep) -> tuple[bool, str | None]:
    """Tell whether the request carries an admin's key with the admin scope, or an admin's session.

    No key means an anonymous caller; a bad key is a 401 as on every route. When the database
    cannot check the key, the caller gets the brief report and a note that explains why.
    """
    token = bearer_token(request)
    if token is None:
        # An admin's browser session (the admin page) sees the details too; reading needs no CSRF.
        session = getattr(request.state, "session_account", None)
        return isinstance(session, SessionAccount) and session.role == "admin", None
    try:
        principal = await services.keys.authenticate(token)
    except (SQLAlchemyError, OSError):
        return False, "The API key could not be checked because the database is unavailable."
    return Scope.ADMIN in principal.scopes and principal.role == "admin", None
