"""Health checks: registered checks run in parallel, each under its own timeout.

A check is an async function that returns a `CheckOutcome` (or None for a plain pass). The
`HealthChecker` runs every registered check at once and folds the results into a
`HealthReport`: a failing critical check fails the report (readiness responds with 503), while a
failing non-critical one only makes it warn. A check that raises fails with the error's
message, and one that outlives its timeout fails as timed out. Until such a check finishes,
later runs report it as still running instead of starting it again, so a hung dependency never
piles up calls. Reports are cached for `cache_s` seconds and concurrent callers share one run,
so a storm of probes costs one round trip to each dependency per period.

Each run records the duration and status of every check as metrics on the given meter
provider. Nothing here imports `app`: the app registers its checks with `register`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from opentelemetry.metrics import CallbackOptions, MeterProvider, NoOpMeterProvider, Observation

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 2.0
MAX_OUTPUT_CHARS = 500
# Check durations run from well under a millisecond (memory) to the timeout (seconds).
DURATION_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class HealthStatus(StrEnum):
    """The three statuses of the IETF draft "Health Check Response Format for HTTP APIs"."""

    PASS = "pass"  # noqa: S105 - a status name, not a password
    WARN = "warn"
    FAIL = "fail"


SEVERITY = {HealthStatus.PASS: 0, HealthStatus.WARN: 1, HealthStatus.FAIL: 2}


class ComponentType(StrEnum):
    """The draft's `componentType` values."""

    COMPONENT = "component"
    DATASTORE = "datastore"
    SYSTEM = "system"


@dataclass(frozen=True)
class CheckOutcome:
    """The finding of one check: its status, an observed value with its unit, and a message.

    `output` describes what is wrong; leave it out for a pass. When a check returns None, or an
    outcome without an observed value, the checker reports the check's duration in ms.
    """

    status: HealthStatus = HealthStatus.PASS
    observed_value: float | int | str | None = None
    observed_unit: str | None = None
    output: str | None = None


CheckFunction = Callable[[], Coroutine[Any, Any, CheckOutcome | None]]


@dataclass(frozen=True)
class HealthCheck:
    """A registered check, reported under the key `component:measurement`."""

    component: str
    measurement: str
    function: CheckFunction
    component_type: ComponentType
    critical: bool
    timeout_s: float
    component_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.component}:{self.measurement}"


@dataclass(frozen=True)
class CheckResult:
    """One check's result in a report. `time` is when the check started (UTC)."""

    check: HealthCheck
    status: HealthStatus
    observed_value: float | int | str | None
    observed_unit: str | None
    output: str | None
    time: datetime
    duration_s: float


@dataclass(frozen=True)
class HealthReport:
    """The results of one run of every check, finished at `finished_monotonic`."""

    results: tuple[CheckResult, ...]
    finished_at: datetime
    finished_monotonic: float

    @property
    def status(self) -> HealthStatus:
        """Fail when a critical check fails; warn when any other check is not a pass."""
        status = HealthStatus.PASS
        for result in self.results:
            effective = result.status
            if effective is HealthStatus.FAIL and not result.check.critical:
                effective = HealthStatus.WARN
            if SEVERITY[effective] > SEVERITY[status]:
                status = effective
        return status

    @property
    def failing_critical(self) -> tuple[str, ...]:
        """Return the components of the critical checks that failed, in registration order."""
        return tuple(
            result.check.component
            for result in self.results
            if result.check.critical and result.status is HealthStatus.FAIL
        )


@dataclass
class _Overrun:
    task: asyncio.Task[CheckOutcome | None]
    started_monotonic: float


class HealthChecker:
    """Runs the registered checks and caches their report for `cache_s` seconds.

    Use it from one event loop. `run_blocking` runs blocking calls of the checks (file system,
    /proc) in a small thread pool of its own, so a busy default pool never delays a probe.
    """

    def __init__(
        self,
        *,
        cache_s: float,
        meter_provider: MeterProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache_s = cache_s
        self._clock = clock
        self._checks: dict[str, HealthCheck] = {}
        self._latest: HealthReport | None = None
        self._running: asyncio.Task[HealthReport] | None = None
        self._overruns: dict[str, _Overrun] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="health-check"
        )
        meter = (meter_provider or NoOpMeterProvider()).get_meter(__name__)
        self._durations = meter.create_histogram(
            "visioncraft.health.check.duration",
            unit="s",
            description="Duration of each health check run.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS_S),
        )
        meter.create_observable_gauge(
            "visioncraft.health.check.status",
            [self._observe_statuses],
            description="1 for each check's latest status (pass, warn or fail) and 0 for the others.",
        )

    def register(
        self,
        component: str,
        function: CheckFunction,
        *,
        measurement: str = "responseTime",
        component_type: ComponentType = ComponentType.COMPONENT,
        critical: bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        component_id: str | None = None,
    ) -> HealthCheck:
        """Add a check, reported under `component:measurement`; a key may be registered once.

        A critical check that fails makes readiness respond with 503; any other only warns.
        `timeout_s` bounds each run of the check.
        """
        if timeout_s <= 0:
            raise ValueError(
                f"timeout_s of health check {component!r} must be above 0, not {timeout_s}"
            )
        check = HealthCheck(
            component=component,
            measurement=measurement,
            function=function,
            component_type=component_type,
            critical=critical,
            timeout_s=timeout_s,
            component_id=component_id,
        )
        if check.key in self._checks:
            raise ValueError(f"a health check is already registered under {check.key!r}")
        self._checks[check.key] = check
        return check

    @property
    def checks(self) -> tuple[HealthCheck, ...]:
        return tuple(self._checks.values())

    @property
    def latest(self) -> HealthReport | None:
        """Return the newest report, however old, without running anything."""
        return self._latest

    def is_fresh(self, report: HealthReport) -> bool:
        return self._clock() - report.finished_monotonic < self.cache_s

    async def report(self) -> HealthReport:
        """Return the cached report while it is fresh; otherwise run the checks once for all callers.

        Cancelling one caller does not cancel the run that other callers wait for.
        """
        latest = self._latest
        if latest is not None and self.is_fresh(latest):
            return latest
        return await asyncio.shield(self._start_run())

    def refresh_in_background(self) -> None:
        """Start a run when the cached report is stale and no run is going; return at once."""
        latest = self._latest
        if latest is None or not self.is_fresh(latest):
            self._start_run()

    async def run_blocking(self, function: Callable[[], T]) -> T:
        """Run a blocking call in the checker's own threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def aclose(self) -> None:
        """Cancel a run in progress and checks still running past their timeout."""
        tasks: list[asyncio.Task[object]] = [overrun.task for overrun in self._overruns.values()]
        if self._running is not None:
            tasks.append(self._running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._overruns.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _start_run(self) -> asyncio.Task[HealthReport]:
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._run_all())
        return self._running

    async def _run_all(self) -> HealthReport:
        results = await asyncio.gather(*(self._run_one(check) for check in self._checks.values()))
        report = HealthReport(
            results=tuple(results),
            finished_at=datetime.now(UTC),
            finished_monotonic=self._clock(),
        )
        self._latest = report
        return report

    async def _run_one(self, check: HealthCheck) -> CheckResult:
        started_at = datetime.now(UTC)
        started = self._clock()
        overrun = self._overruns.get(check.key)
        if overrun is not None and not overrun.task.done():
            running_s = started - overrun.started_monotonic
            outcome = CheckOutcome(
                HealthStatus.FAIL,
                output=f"an earlier run has been running for {running_s:.1f} s, past its "
                f"timeout of {check.timeout_s:g} s; it is not started again until it finishes",
            )
            return self._result(check, outcome, started_at, duration_s=0.0)

        task = asyncio.get_running_loop().create_task(check.function())
        try:
            done, _pending = await asyncio.wait({task}, timeout=check.timeout_s)
        except asyncio.CancelledError:
            task.cancel()
            raise
        duration_s = self._clock() - started
        if not done:
            # Not cancelled: a check blocked in a thread would go on anyway, and starting it
            # again every period would pile up threads or connections.
            self._overruns[check.key] = _Overrun(task, started)
            task.add_done_callback(_retrieve_exception)
            outcome = CheckOutcome(
                HealthStatus.FAIL, output=f"timed out after {check.timeout_s:g} s"
            )
            return self._result(check, outcome, started_at, duration_s)
        self._overruns.pop(check.key, None)
        return self._result(check, _outcome_of(task), started_at, duration_s)

    def _result(
        self,
        check: HealthCheck,
        outcome: CheckOutcome | None,
        started_at: datetime,
        duration_s: float,
    ) -> CheckResult:
        outcome = outcome or CheckOutcome()
        observed_value, observed_unit = outcome.observed_value, outcome.observed_unit
        if observed_value is None and observed_unit is None:
            observed_value, observed_unit = round(duration_s * 1000, 3), "ms"
        output = outcome.output
        if output is not None and len(output) > MAX_OUTPUT_CHARS:
            output = output[: MAX_OUTPUT_CHARS - 1] + "…"
        self._durations.record(duration_s, {"check": check.key})
        return CheckResult(
            check=check,
            status=outcome.status,
            observed_value=observed_value,
            observed_unit=observed_unit,
            output=output,
            time=started_at,
            duration_s=duration_s,
        )

    def _observe_statuses(self, _options: CallbackOptions) -> Iterable[Observation]:
        report = self._latest
        if report is None:
            return
        for result in report.results:
            for status in HealthStatus:
                value = 1 if result.status is status else 0
                yield Observation(value, {"check": result.check.key, "status": status.value})


def _outcome_of(task: asyncio.Task[CheckOutcome | None]) -> CheckOutcome | None:
    """Return the finished check's outcome; an exception becomes a fail with its message."""
    if task.cancelled():
        return CheckOutcome(HealthStatus.FAIL, output="the check was cancelled")
    error = task.exception()
    if error is None:
        return task.result()
    message = str(error).strip() or type(error).__name__
    logger.debug("health check raised %s", type(error).__name__, exc_info=error)
    return CheckOutcome(HealthStatus.FAIL, output=message)


def _retrieve_exception(task: asyncio.Task[CheckOutcome | None]) -> None:
    # The run of a check that finished after its timeout was reported as failed already. Reading
    # its exception keeps asyncio from logging "Task exception was never retrieved".
    if not task.cancelled():
        task.exception()
