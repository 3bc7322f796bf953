"""The app's health checks, registered on the telemetry's HealthChecker.

Critical checks decide readiness: the database (every API request reads it) and the image
store (every generation writes to it). The others only warn: Redis (the limits let requests
through while it is down), the generation backend, billing (off is normal in development), the
OTLP export, the disk and memory.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.accounts.limits import RedisLimitStore
from app.billing.health import check_billing
from app.billing.service import BillingService
from app.container import Services
from app.generation.backend import ImageBackend
from app.storage.blobs import ImageStore
from app.storage.database import DatabaseNotMigratedError, check_revision
from telemetry import Telemetry
from telemetry.health import CheckFunction, CheckOutcome, ComponentType, HealthChecker, HealthStatus
from telemetry.health_checks import disk_check, export_check, memory_check

HEALTH_OBJECT_PREFIX = "health/"
# Outcomes of a backend call that show no fault of the backend itself.
HEALTHY_CALL_OUTCOMES = frozenset({"success", "blocked", "cancelled"})


def register_health_checks(
    checker: HealthChecker, services: Services, telemetry: Telemetry, *, memory_limit_bytes: int
) -> None:
    """Register every check of the app on `checker`."""
    settings = services.settings
    timeout_s = settings.health_check_timeout_s
    checker.register(
        "database",
        database_check(services.health_engine),
        component_type=ComponentType.DATASTORE,
        timeout_s=timeout_s,
        component_id=services.engine.url.get_backend_name(),
    )
    checker.register(
        "imageStore",
        image_store_check(services.store),
        component_type=ComponentType.DATASTORE,
        timeout_s=timeout_s,
        component_id=services.store.name,
    )
    if isinstance(services.limit_store, RedisLimitStore):
        checker.register(
            "redis",
            redis_check(services.limit_store),
            component_type=ComponentType.DATASTORE,
            critical=False,
            timeout_s=timeout_s,
        )
    backend = services.generation.live_backend
    checker.register(
        "imageBackend",
        backend_check(backend),
        measurement="lastCall",
        critical=False,
        timeout_s=timeout_s,
        component_id=backend.name,
    )
    checker.register(
        "billing",
        billing_check(services.billing),
        measurement="lastWebhook",
        component_type=ComponentType.COMPONENT,
        critical=False,
        timeout_s=timeout_s,
        component_id="stripe",
    )
    checker.register(
        "telemetryExport",
        export_check(telemetry.export_status, tuple(telemetry.environment.otlp_protocols)),
        measurement="lastExport",
        critical=False,
        timeout_s=timeout_s,
        component_id="otlp",
    )
    checker.register(
        "disk",
        disk_check(
            settings.data_dir,
            warn_below_mb=settings.health_disk_free_warn_mb,
            fail_below_mb=settings.health_disk_free_fail_mb,
            run_blocking=checker.run_blocking,
        ),
        measurement="freeSpace",
        component_type=ComponentType.SYSTEM,
        critical=False,
        timeout_s=timeout_s,
    )
    checker.register(
        "memory",
        memory_check(
            warn_above_percent=settings.health_memory_warn_percent,
            fail_above_percent=settings.health_memory_fail_percent,
            limit_bytes=memory_limit_bytes,
            run_blocking=checker.run_blocking,
        ),
        measurement="utilization",
        component_type=ComponentType.SYSTEM,
        critical=False,
        timeout_s=timeout_s,
    )


def database_check(engine: AsyncEngine) -> CheckFunction:
    """Read the migration revision: one round trip that also shows whether migrations ran."""

    async def check() -> CheckOutcome | None:
        try:
            async with engine.connect() as connection:
                result = await connection.execute(text("SELECT version_num FROM alembic_version"))
                revision = result.scalar_one_or_none()
        except DBAPIError as error:
            # The driver's own message, without SQLAlchemy's statement and help link.
            return CheckOutcome(
                HealthStatus.FAIL, output=f"{type(error.orig).__name__}: {error.orig}"
            )
        except SQLAlchemyError as error:
            return CheckOutcome(HealthStatus.FAIL, output=f"{type(error).__name__}: {error}")
        try:
            current = check_revision(revision)
        except DatabaseNotMigratedError as error:
            return CheckOutcome(HealthStatus.FAIL, output=str(error))
        if not current:
            return CheckOutcome(
                HealthStatus.WARN,
                output=f"the database is at migration {revision}, newer than this release knows",
            )
        return None

    return check


def image_store_check(store: ImageStore) -> CheckFunction:
    """Write, read back and delete a small object under `health/`, with a new name each time."""

    async def check() -> CheckOutcome | None:
        payload = secrets.token_bytes(16)
        key = f"{HEALTH_OBJECT_PREFIX}{secrets.token_hex(8)}.bin"
        await store.put(key, payload, "application/octet-stream")
        try:
            read = await store.get(key)
        finally:
            await store.delete(key)
        if read != payload:
            return CheckOutcome(
                HealthStatus.FAIL,
                output=f"the {store.name} image store returned other bytes than were written",
            )
        return None

    return check


def redis_check(store: RedisLimitStore) -> CheckFunction:
    async def check() -> CheckOutcome | None:
        await store.ping()
        return None

    return check


def backend_check(backend: ImageBackend) -> CheckFunction:
    """Report the outcome and age of the backend's last real call; never call the paid API.

    The observed value is the age of that call in seconds, or null before the first one.
    """

    async def check() -> CheckOutcome:
        called_at: datetime | None = getattr(backend, "last_call_at", None)
        outcome: str | None = getattr(backend, "last_call_outcome", None)
        if called_at is None or outcome is None:
            return CheckOutcome(observed_unit="s")
        age_s = round((datetime.now(UTC) - called_at).total_seconds(), 1)
        if outcome in HEALTHY_CALL_OUTCOMES:
            return CheckOutcome(observed_value=age_s, observed_unit="s")
        status = HealthStatus.FAIL if outcome == "unavailable" else HealthStatus.WARN
        return CheckOutcome(
            status,
            observed_value=age_s,
            observed_unit="s",
            output=f"the last call to the {backend.name} backend, {age_s:g} s ago, ended "
            f"with the outcome {outcome!r}",
        )

    return check


def billing_check(billing: BillingService) -> CheckFunction:
    """Report billing's state; the observed value is the age of the newest verified webhook."""

    async def check() -> CheckOutcome:
        result = await check_billing(billing)
        age_s = result.observed.get("last_webhook_age_s")
        return CheckOutcome(
            HealthStatus(result.status),
            observed_value=age_s if isinstance(age_s, int | float) else None,
            observed_unit="s",
            output=None if result.status == "pass" else result.output,
        )

    return check
