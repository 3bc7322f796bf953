"""create_app(settings): wires the services, routes and middleware; the lifespan runs them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from fastapi import APIRouter, FastAPI

from app import __version__
from app.api import images, monitoring
from app.api.middleware import RequestContextMiddleware
from app.api.problems import install_problem_handlers
from app.api.telemetry import UNOBSERVED_PATHS, fastapi_telemetry, http_views
from app.container import Services, build_services
from app.settings import Settings, get_settings
from app.storage.database import is_database_current, migrate
from app.storage.tables import utc_now
from telemetry import ServiceIdentity, Telemetry, register_process_metrics

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
RETENTION_INTERVAL_S = 3600.0
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
    await services.accounts.ensure_local_account()


async def delete_expired_images_forever(services: Services) -> None:
    """Delete images past IMAGE_RETENTION_DAYS now and then every hour."""
    retention = timedelta(days=services.settings.image_retention_days)
    while True:
        try:
            await services.generation.delete_expired_images(utc_now() - retention)
        except Exception:  # the next round retries; a failed sweep must not stop the service
            logger.exception("deleting expired images failed")
        await asyncio.sleep(RETENTION_INTERVAL_S)


def build_telemetry(settings: Settings) -> Telemetry:
    """The app's providers, with process metrics; OTLP starts with the lifespan."""
    telemetry = Telemetry(
        ServiceIdentity(SERVICE_NAME, __version__, settings.environment.value),
        views=http_views(settings.request_timeout_s),
        secret_query_parameters=SECRET_QUERY_PARAMETERS,
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
    retention_task = asyncio.create_task(delete_expired_images_forever(services))
    logger.info(
        "VisionCraftAI %s started: backend %s, database %s",
        __version__,
        services.settings.resolved_backend.value,
        services.engine.url.get_backend_name(),
    )
    try:
        yield
    finally:
        retention_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await retention_task
        still_running = await services.generation.wait_for_in_flight(
            services.settings.request_timeout_s
        )
        if still_running:
            logger.warning("stopping with %s generations still running", still_running)
        await services.aclose()
        logger.info("VisionCraftAI stopped")
        await asyncio.to_thread(telemetry.shutdown, services.settings.telemetry_flush_s)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    telemetry = build_telemetry(settings)
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
        telemetry=fastapi_telemetry(telemetry),
    )
    app.state.services = services
    app.state.telemetry = telemetry
    app.state.public_base_url = settings.resolved_public_base_url
    install_problem_handlers(app)

    api = APIRouter(prefix=API_PREFIX)
    api.include_router(images.router)
    api.include_router(monitoring.api_router)
    app.include_router(api)
    app.include_router(monitoring.router)

    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_request_bytes,
        quiet_paths=UNOBSERVED_PATHS,
    )
    return app
