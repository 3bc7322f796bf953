"""create_app(settings): wires the services, routes and middleware; the lifespan runs them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

from fastapi import APIRouter, FastAPI
from opentelemetry.sdk.metrics.export import MetricReader

from app import __version__
from app.accounts.credits import stale_cutoff
from app.accounts.service import DEFAULT_PLAN, INTERNAL_PLAN
from app.api import account, admin, billing, demo, images, keys, monitoring, plans
from app.api.middleware import RequestContextMiddleware
from app.api.problems import install_problem_handlers
from app.api.telemetry import UNOBSERVED_PATHS, fastapi_telemetry, http_views
from app.container import Services, build_services
from app.errors import ServiceError
from app.settings import Settings, get_settings
from app.storage.database import is_database_current, migrate
from app.storage.tables import utc_now
from app.web.install import install_web
from app.web.security import SecurityHeadersMiddleware
from app.web.sessions import BrowserSessionMiddleware
from telemetry import ServiceIdentity, Telemetry, register_process_metrics

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
RETENTION_INTERVAL_S = 3600.0
STALE_RESERVATION_SWEEP_S = 60.0
BILLING_FIGURES_REFRESH_S = 60.0
# Stripe's events can outgrow the JSON body limit (an invoice with many lines), and a 413
# would make Stripe retry an event that can never fit.
WEBHOOK_MAX_BODY_BYTES = 1024 * 1024
SERVICE_NAME = "visioncraft"
# Signed image URLs carry a signature that grants access to the image until it expires.
SECRET_QUERY_PARAMETERS = ("signature",)


async def prepare_database(services: Services) -> None:
    """Migrate in development; in production only check, because a Job runs `visioncraft migrate`."""
    settings = services.settings
    if not settings.is_production:
        await migrate(settings.resolved_database_url)
    elif not await is_database_current(services.engine):
        logger.error("the database is not at the newest migration: run `visioncraft migrate`")
    # The local admin account never hits a limit in development. In production it starts as
    # a free account like any other, until an operator changes its plan.
    await services.accounts.ensure_local_account(
        plan=DEFAULT_PLAN if settings.is_production else INTERNAL_PLAN
    )


async def check_image_store(services: Services) -> None:
    """Log an error naming the setting to fix when the image store cannot be used.

    The service still starts, so that it recovers without a restart once the store works; until
    then every call that reads or writes image bytes fails with the same error.
    """
    try:
        await services.store.check()
    except ServiceError as error:
        logger.error("the %s image store is not usable: %s", services.store.name, error.detail)


async def delete_expired_images_forever(services: Services) -> None:
    """Delete images past IMAGE_RETENTION_DAYS now and then every hour."""
    retention = timedelta(days=services.settings.image_retention_days)
    while True:
        try:
            await services.generation.delete_expired_images(utc_now() - retention)
        except Exception:  # the next round retries; a failed sweep must not stop the service
            logger.exception("deleting expired images failed")
        await asyncio.sleep(RETENTION_INTERVAL_S)


async def release_stale_reservations(services: Services) -> int:
    """Refund credit reservations too old to belong to any request still running."""
    settings = services.settings
    cutoff = stale_cutoff(
        utc_now(),
        request_timeout_s=settings.request_timeout_s,
        margin_s=settings.stale_reservation_margin_s,
    )
    return await services.credits.release_stale(cutoff)


async def release_stale_reservations_forever(services: Services) -> None:
    """Release stale reservations and delete ended browser sessions every minute."""
    while True:
        await asyncio.sleep(STALE_RESERVATION_SWEEP_S)
        try:
            await release_stale_reservations(services)
            await services.browser_sessions.delete_expired()
        except Exception:  # the next round retries; a failed sweep must not stop the service
            logger.exception("releasing stale credit reservations or ended sessions failed")


async def refresh_billing_figures_forever(services: Services) -> None:
    """Reread MRR and subscription counts for the billing gauges now and every minute."""
    processor = services.billing.processor
    if processor is None:
        return
    while True:
        try:
            await processor.refresh_figures()
        except Exception:  # the next round retries; a failed refresh must not stop the service
            logger.exception("refreshing the billing figures failed")
        await asyncio.sleep(BILLING_FIGURES_REFRESH_S)


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


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    telemetry: Telemetry = app.state.telemetry
    telemetry.start()
    if services.settings.is_production and services.settings.metrics_token is None:
        logger.warning(
            "VISIONCRAFT_METRICS_TOKEN is unset: /metrics answers anyone who reaches it. "
            "Set a token, or keep /metrics off the public ingress"
        )
    await prepare_database(services)
    await check_image_store(services)
    if services.settings.is_production and services.settings.redis_url is None:
        logger.warning(
            "VISIONCRAFT_REDIS_URL is unset: each replica keeps its own rate limits, so the "
            "limits multiply with the replica count; set it to share them"
        )
    app.state.demo_account_id = (await services.accounts.ensure_demo_account()).id
    await release_stale_reservations(services)

    if not services.billing.is_configured:
        logger.info(
            "billing is off: set %s to turn it on",
            " and ".join(services.billing.missing_settings),
        )
    retention_task = asyncio.create_task(delete_expired_images_forever(services))
    sweep_task = asyncio.create_task(release_stale_reservations_forever(services))
    figures_task = asyncio.create_task(refresh_billing_figures_forever(services))
    logger.info(
        "VisionCraftAI %s started: backend %s, database %s, image store %s",
        __version__,
        services.settings.resolved_backend.value,
        services.engine.url.get_backend_name(),
        services.store.name,
    )
    try:
        yield
    finally:
        for task in (retention_task, sweep_task, figures_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        still_running = await services.generation.wait_for_in_flight(
            services.settings.request_timeout_s
        )
        if still_running:
            logger.warning("stopping with %s generations still running", still_running)
        await services.aclose()
        logger.info("VisionCraftAI stopped")
        await asyncio.to_thread(telemetry.shutdown, services.settings.telemetry_flush_s)


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

    # Innermost of the three: it reads the database, so it runs with the request id set.
    app.add_middleware(
        BrowserSessionMiddleware,
        sessions=services.browser_sessions,
        trusted_proxies=settings.trusted_proxies,
    )
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_request_bytes,
        quiet_paths=UNOBSERVED_PATHS,
        body_limits={f"{API_PREFIX}{billing.WEBHOOK_PATH}": WEBHOOK_MAX_BODY_BYTES},
    )
    # Added last, so it is outermost and also covers the request middleware's own responses.
    app.add_middleware(SecurityHeadersMiddleware, trusted_proxies=settings.trusted_proxies)
    return app
