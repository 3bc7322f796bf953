"""Start-up of a serving process, and the background work it starts.

Readiness stays 503 until start-up has finished: the database is reachable and at the newest
migration, and the generation backend is set up. Start-up retries every few seconds until then,
so a pod that starts before its database, or before the migration Job has run, becomes ready by
itself. Liveness passes all along, so Kubernetes does not restart a pod that only waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from starlette.datastructures import State

from app import __version__
from app.accounts.credits import stale_cutoff
from app.accounts.service import DEFAULT_PLAN, INTERNAL_PLAN
from app.container import Services
from app.errors import ServiceError
from app.storage.database import (
    DatabaseNotMigratedError,
    check_revision,
    current_revision,
    migrate,
)
from app.storage.tables import utc_now
from telemetry.health import HealthChecker
from telemetry.lifecycle import Lifecycle, StartupProblem

logger = logging.getLogger(__name__)

RETENTION_INTERVAL_S = 3600.0
STALE_RESERVATION_SWEEP_S = 60.0
BILLING_FIGURES_REFRESH_S = 60.0
STARTUP_RETRY_S = 2.0
STARTUP_LOG_INTERVAL_S = 30.0


class StartupError(Exception):
    """Start-up cannot finish yet because `component` is not usable."""

    def __init__(self, component: str, message: str) -> None:
        super().__init__(message)
        self.problem = StartupProblem(component, message)


async def prepare_database(services: Services) -> None:
    """Migrate in development; in production only check, because a Job runs `visioncraft migrate`.

    Raise DatabaseNotMigratedError in production when the database is older than this release.
    """
    settings = services.settings
    if not settings.is_production:
        await migrate(settings.resolved_database_url)
    else:
        revision = await current_revision(services.engine)
        if not check_revision(revision):
            logger.warning(
                "the database is at migration %s, which this release does not know; "
                "a newer release has migrated it",
                revision,
            )
    # The local admin account never hits a limit in development. In production it starts as
    # a free account like any other, until an operator changes its plan.
    await services.accounts.ensure_local_account(
        plan=DEFAULT_PLAN if settings.is_production else INTERNAL_PLAN
    )


async def check_image_store(services: Services) -> None:
    """Log an error naming the setting to fix when the image store cannot be used.

    The service still starts, so that it recovers without a restart once the store works; until
    then every call that reads or writes image bytes fails with the same error, and the image
    store's health check fails readiness.
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


async def start_up_once(services: Services, state: State) -> None:
    """Make one attempt at start-up; raise StartupError naming the component that is not ready."""
    try:
        await prepare_database(services)
        state.demo_account_id = (await services.accounts.ensure_demo_account()).id
        await release_stale_reservations(services)
    except DBAPIError as error:
        raise StartupError("database", f"{type(error.orig).__name__}: {error.orig}") from error
    except (DatabaseNotMigratedError, SQLAlchemyError, OSError) as error:
        raise StartupError("database", str(error) or type(error).__name__) from error
    await check_image_store(services)
    try:
        await services.generation.live_backend.prepare()
    except ServiceError as error:
        raise StartupError("imageBackend", error.detail) from error


class StartupRunner:
    """Retries start-up until it succeeds, then starts the background work and marks serving.

    The lifespan waits for the first attempt to end, well or not: when the dependencies are
    up, the app serves from its first request.
    """

    def __init__(
        self,
        services: Services,
        state: State,
        *,
        lifecycle: Lifecycle,
        checker: HealthChecker,
        retry_s: float = STARTUP_RETRY_S,
    ) -> None:
        self._services = services
        self._state = state
        self._lifecycle = lifecycle
        self._checker = checker
        self._retry_s = retry_s
        self.first_attempt_done = asyncio.Event()
        self.background_tasks: list[asyncio.Task[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._last_logged: tuple[str, float] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def wait_for_first_attempt(self, timeout_s: float) -> None:
        """Wait until the first attempt has ended, or `timeout_s` seconds at most."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.first_attempt_done.wait(), timeout_s)

    async def run(self) -> None:
        while not await self._attempt():
            self.first_attempt_done.set()
            await asyncio.sleep(self._retry_s)
        self.background_tasks = [
            asyncio.create_task(delete_expired_images_forever(self._services)),
            asyncio.create_task(release_stale_reservations_forever(self._services)),
            asyncio.create_task(refresh_billing_figures_forever(self._services)),
        ]
        # A first report, so that readiness reflects the checks from the first probe on.
        await self._checker.report()
        self._lifecycle.mark_serving()
        self.first_attempt_done.set()
        settings = self._services.settings
        logger.info(
            "VisionCraftAI %s started: backend %s, database %s, image store %s",
            __version__,
            settings.resolved_backend.value,
            self._services.engine.url.get_backend_name(),
            self._services.store.name,
        )

    async def _attempt(self) -> bool:
        try:
            await start_up_once(self._services, self._state)
        except StartupError as error:
            self._record(error.problem)
            return False
        except Exception as error:  # the start-up boundary: report it, retry, stay alive
            logger.exception("start-up failed unexpectedly; retrying in %.0f s", self._retry_s)
            self._lifecycle.startup_problem = StartupProblem("startup", type(error).__name__)
            return False
        return True

    def _record(self, problem: StartupProblem) -> None:
        """Keep the problem for readiness; log it when it changes, else once per interval."""
        self._lifecycle.startup_problem = problem
        now = time.monotonic()
        if self._last_logged is not None:
            message, logged_at = self._last_logged
            if message == problem.message and now - logged_at < STARTUP_LOG_INTERVAL_S:
                return
        self._last_logged = (problem.message, now)
        logger.warning(
            "start-up waits for the %s: %s; retrying every %.0f s",
            problem.component,
            problem.message,
            self._retry_s,
        )

    async def stop(self) -> None:
        """Cancel start-up if it still runs, and the background work it started."""
        tasks = [*self.background_tasks, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
