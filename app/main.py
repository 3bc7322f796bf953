"""create_app(settings): wires the services, routes and middleware; the lifespan runs them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from fastapi import APIRouter, FastAPI
from opentelemetry.sdk.metrics.export import MetricReader

from app import __version__
from app.api import account, admin, billing, demo, images, keys, monitoring, plans
from app.api.middleware import RequestContextMiddleware, StartingGateMiddleware
from app.api.problems import install_problem_handlers
from app.api.telemetry import UNOBSERVED_PATHS, fastapi_telemetry, http_views
from app.container import Services, build_services
from app.health_checks import register_health_checks
from app.settings import Settings, get_settings
from app.startup import StartupRunner
from app.web.install import install_web
from app.web.security import SecurityHeadersMiddleware
from app.web.sessions import BrowserSessionMiddleware
from telemetry import ServiceIdentity, Telemetry, register_process_metrics
from telemetry.health import HealthChecker
from telemetry.health_checks import memory_limit_bytes
from telemetry.health_document import ServiceDescription, SystemProbe
from telemetry.lifecycle import Lifecycle

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
API_VERSION = "1"
SERVICE_NAME = "visioncraft"
SERVICE_DESCRIPTION = "VisionCraftAI image generation API"
# How long the lifespan waits for the first start-up attempt before it lets the server listen.
# Past that, start-up goes on in the background while readiness responds with 503.
FIRST_STARTUP_ATTEMPT_WAIT_S = 10.0
# Closing connections gets what is left of the shutdown grace, but at least this much.
MIN_CLOSE_S = 1.0
# Stripe's events can outgrow the JSON body limit (an invoice with many lines), and a 413
# would make Stripe retry an event that can never fit.
WEBHOOK_MAX_BODY_BYTES = 1024 * 1024
# Signed image URLs carry a signature that grants access to the image until it expires.
SECRET_QUERY_PARAMETERS = ("signature",)


def build_telemetry(settings: Settings, metric_readers: Sequence[MetricReader] = ()) -> Telemetry:
    """Build the app's providers, with process metrics; OTLP export starts with the lifespan.

    `metric_readers` are added beside the Prometheus reader; tests pass an in-memory one.
    """
    telemetry = Telemetry(
        ServiceIdentity(SERVICE_NAME, __version__, settings.environment.value),
        views=http_views(settings.request_timeout_s),
        secret_query_parameters=SECRET_QUERY_PARAMETERS,
        metric_readers=metric_readers,
    )
    register_process_metrics(telemetry.meter_provider, data_dir=settings.data_dir)
    return telemetry


def install_health(app: FastAPI, services: Services, telemetry: Telemetry) -> None:
    """Put the serving phase, the health checker with the app's checks and the facts that the
    health report shows admins on `app.state`."""
    settings = services.settings
    limit_bytes = memory_limit_bytes()
    checker = HealthChecker(
        cache_s=settings.health_cache_s, meter_provider=telemetry.meter_provider
    )
    register_health_checks(checker, services, telemetry, memory_limit_bytes=limit_bytes)
    app.state.lifecycle = Lifecycle()
    app.state.health = checker
    app.state.service_description = describe_service(telemetry)
    app.state.system_probe = SystemProbe(settings.data_dir, memory_limit_bytes=limit_bytes)


def describe_service(telemetry: Telemetry) -> ServiceDescription:
    instance = telemetry.resource.attributes.get("service.instance.id", "")
    return ServiceDescription(
        version=API_VERSION,
        release_id=__version__,
        service_id=f"{SERVICE_NAME}/{instance}",
        description=SERVICE_DESCRIPTION,
    )


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    telemetry: Telemetry = app.state.telemetry
    settings = services.settings
    telemetry.start()
    if settings.is_production and settings.metrics_token is None:
        logger.warning(
            "VISIONCRAFT_METRICS_TOKEN is unset: /metrics answers anyone who reaches it. "
            "Set a token, or keep /metrics off the public ingress"
        )
    if settings.is_production and settings.redis_url is None:
        logger.warning(
            "VISIONCRAFT_REDIS_URL is unset: each replica keeps its own rate limits, so the "
            "limits multiply with the replica count; set it to share them"
        )
    if not services.billing.is_configured:
        logger.info(
            "billing is off: set %s to turn it on",
            " and ".join(services.billing.missing_settings),
        )
    startup = StartupRunner(
        services, app.state, lifecycle=app.state.lifecycle, checker=app.state.health
    )
    startup.start()
    await startup.wait_for_first_attempt(FIRST_STARTUP_ATTEMPT_WAIT_S)
    try:
        yield
    finally:
        await shut_down(app, startup)


async def shut_down(app: FastAPI, startup: StartupRunner) -> None:
    """Let generations in flight finish within the grace, close everything, flush telemetry."""
    services: Services = app.state.services
    lifecycle: Lifecycle = app.state.lifecycle
    settings = services.settings
    await startup.stop()
    remaining_s = lifecycle.grace_remaining_s(settings.shutdown_grace_s)
    still_running = await services.generation.wait_for_in_flight(remaining_s)
    if still_running:
        logger.warning("stopping with %s generations still running", still_running)
    await app.state.health.aclose()
    try:
        # Closing connections takes milliseconds, but a database that stopped responding must not
        # keep the process past its budget.
        async with asyncio.timeout(max(lifecycle.grace_remaining_s(0.0), MIN_CLOSE_S)):
            await services.aclose()
    except TimeoutError:
        logger.warning("closing the database, Redis and image store connections timed out")
    logger.info("VisionCraftAI stopped")
    await asyncio.to_thread(app.state.telemetry.shutdown, settings.telemetry_flush_s)


def create_app(
    settings: Settings | None = None, *, metric_readers: Sequence[MetricReader] = ()
) -> FastAPI:
    settings = settings or get_settings()
    settings.check_seller_details()
    telemetry = build_telemetry(settings, metric_readers)
    services = build_services(
        settings,
        meter_provider=telemetry.meter_provider,
        tracer_provider=telemetry.tracer_provider,
        capture_content=telemetry.capture_message_content,
    )
    app = FastAPI(
        title="VisionCraftAI",
        version=__version__,
        description="Image generation with an OpenAI-compatible API.",
        lifespan=lifespan,
        # The pages own /docs; the OpenAPI schema stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
        telemetry=fastapi_telemetry(telemetry),
    )
    app.state.services = services
    app.state.telemetry = telemetry
    install_health(app, services, telemetry)
    app.state.public_base_url = settings.resolved_public_base_url
    app.state.rejection_recorder = services.account_metrics.record_rejection
    install_problem_handlers(app)

    api = APIRouter(prefix=API_PREFIX)
    for module in (images, account, keys, admin, demo, plans, billing):
        api.include_router(module.router)
    api.include_router(monitoring.api_router)
    app.include_router(api)
    app.include_router(monitoring.router)
    install_web(app, settings)

    # Middleware added first runs innermost. The session middleware reads the database, so it
    # sits inside the starting gate, which answers 503 until start-up has reached the database.
    app.add_middleware(
        BrowserSessionMiddleware,
        sessions=services.browser_sessions,
        trusted_proxies=settings.trusted_proxies,
    )
    app.add_middleware(
        StartingGateMiddleware,
        lifecycle=app.state.lifecycle,
        open_paths=monitoring.MONITORING_PATHS,
    )
    # The probes skip the gate (always open to them), the session lookup and the router, but
    # still get a request id and the security headers of every response.
    app.add_middleware(monitoring.ProbeResponder)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_request_bytes,
        quiet_paths=UNOBSERVED_PATHS,
        body_limits={f"{API_PREFIX}{billing.WEBHOOK_PATH}": WEBHOOK_MAX_BODY_BYTES},
    )
    # Added last, so it is outermost and also covers the request middleware's own responses.
    app.add_middleware(SecurityHeadersMiddleware, trusted_proxies=settings.trusted_proxies)
    return app
