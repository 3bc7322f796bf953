"""The health checker: parallel runs, timeouts, errors, aggregation, caching and metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from telemetry.exporters import ExportStatus
from telemetry.health import CheckOutcome, HealthChecker, HealthStatus
from telemetry.health_checks import disk_check, export_check, memory_check

pytestmark = pytest.mark.anyio


class Clock:
    """A monotonic clock that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingCheck:
    """A check that counts its calls and returns a fixed outcome."""

    def __init__(self, outcome: CheckOutcome | None = None) -> None:
        self.calls = 0
        self.outcome = outcome

    async def __call__(self) -> CheckOutcome | None:
        self.calls += 1
        await asyncio.sleep(0)
        return self.outcome


@pytest.fixture
def checker() -> HealthChecker:
    return HealthChecker(cache_s=5.0)


async def test_checks_run_in_parallel(checker: HealthChecker) -> None:
    # Each check waits for the other at the barrier, so a sequential run would time out.
    barrier = asyncio.Barrier(2)

    async def meet() -> None:
        await barrier.wait()

    checker.register("first", meet, timeout_s=5)
    checker.register("second", meet, timeout_s=5)

    report = await checker.report()

    assert [result.status for result in report.results] == [HealthStatus.PASS, HealthStatus.PASS]
    await checker.aclose()


async def test_hanging_check_times_out_and_is_not_restarted() -> None:
    clock = Clock()
    checker = HealthChecker(cache_s=1.0, clock=clock)
    calls = 0

    async def hang() -> None:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()

    checker.register("queue", hang, timeout_s=0.05)

    first = await asyncio.wait_for(checker.report(), timeout=5)
    clock.now += 2
    second = await asyncio.wait_for(checker.report(), timeout=5)
    await checker.aclose()

    assert first.status is HealthStatus.FAIL
    assert first.failing_critical == ("queue",)
    assert first.results[0].output == "timed out after 0.05 s"
    assert second.results[0].status is HealthStatus.FAIL
    assert second.results[0].output is not None
    assert "past its timeout of 0.05 s" in second.results[0].output
    assert calls == 1


async def test_check_that_finishes_late_runs_again(checker: HealthChecker) -> None:
    release = asyncio.Event()
    calls = 0

    async def slow_once() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await release.wait()

    checker.register("slow", slow_once, timeout_s=0.05)
    checker.cache_s = 0.0001

    late = await checker.report()
    release.set()
    await asyncio.sleep(0.01)
    recovered = await checker.report()
    await checker.aclose()

    assert late.results[0].status is HealthStatus.FAIL
    assert recovered.results[0].status is HealthStatus.PASS
    assert calls == 2


async def test_raising_check_fails_with_its_message(checker: HealthChecker) -> None:
    async def broken() -> None:
        raise ConnectionRefusedError("connection refused by 127.0.0.1:5432")

    checker.register("database", broken)

    report = await checker.report()
    await checker.aclose()

    assert report.status is HealthStatus.FAIL
    assert report.results[0].output == "connection refused by 127.0.0.1:5432"


@pytest.mark.parametrize(
    ("critical_status", "other_status", "expected"),
    [
        (HealthStatus.PASS, HealthStatus.PASS, HealthStatus.PASS),
        (HealthStatus.PASS, HealthStatus.WARN, HealthStatus.WARN),
        (HealthStatus.PASS, HealthStatus.FAIL, HealthStatus.WARN),
        (HealthStatus.WARN, HealthStatus.PASS, HealthStatus.WARN),
        (HealthStatus.FAIL, HealthStatus.PASS, HealthStatus.FAIL),
        (HealthStatus.FAIL, HealthStatus.WARN, HealthStatus.FAIL),
    ],
)
async def test_report_status_weighs_criticality(
    checker: HealthChecker,
    critical_status: HealthStatus,
    other_status: HealthStatus,
    expected: HealthStatus,
) -> None:
    checker.register("database", CountingCheck(CheckOutcome(critical_status)))
    checker.register("redis", CountingCheck(CheckOutcome(other_status)), critical=False)

    report = await checker.report()
    await checker.aclose()

    assert report.status is expected
    expected_failing = ("database",) if critical_status is HealthStatus.FAIL else ()
    assert report.failing_critical == expected_failing


async def test_concurrent_callers_share_one_run_per_period() -> None:
    clock = Clock()
    checker = HealthChecker(cache_s=2.0, clock=clock)
    check = CountingCheck()
    checker.register("database", check)

    await asyncio.gather(*(checker.report() for _ in range(200)))
    clock.now += 1.9
    await asyncio.gather(*(checker.report() for _ in range(200)))
    calls_within_period = check.calls
    clock.now += 0.2
    await asyncio.gather(*(checker.report() for _ in range(200)))
    await checker.aclose()

    assert calls_within_period == 1
    assert check.calls == 2


async def test_background_refresh_starts_one_run_when_stale() -> None:
    clock = Clock()
    checker = HealthChecker(cache_s=2.0, clock=clock)
    check = CountingCheck()
    checker.register("database", check)
    first = await checker.report()

    checker.refresh_in_background()
    clock.now += 3
    for _ in range(50):
        checker.refresh_in_background()
    await asyncio.sleep(0.01)
    await checker.aclose()

    assert check.calls == 2
    assert checker.latest is not None
    assert checker.latest is not first


async def test_duration_defaults_to_observed_milliseconds(checker: HealthChecker) -> None:
    checker.register("database", CountingCheck())
    checker.register(
        "disk",
        CountingCheck(CheckOutcome(observed_value=812, observed_unit="MB")),
        measurement="freeSpace",
    )

    report = await checker.report()
    await checker.aclose()

    database, disk = report.results
    assert database.observed_unit == "ms"
    assert isinstance(database.observed_value, float)
    assert (disk.observed_value, disk.observed_unit) == (812, "MB")
    assert disk.check.key == "disk:freeSpace"


async def test_register_rejects_a_key_twice(checker: HealthChecker) -> None:
    checker.register("database", CountingCheck())

    with pytest.raises(ValueError, match="already registered under 'database:responseTime'"):
        checker.register("database", CountingCheck())
    await checker.aclose()


async def test_statuses_and_durations_are_metrics() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    checker = HealthChecker(cache_s=5.0, meter_provider=provider)
    checker.register("database", CountingCheck())
    checker.register("redis", CountingCheck(CheckOutcome(HealthStatus.FAIL)), critical=False)

    await checker.report()
    await checker.aclose()
    data = reader.get_metrics_data()
    provider.shutdown()

    assert data is not None
    metrics = {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    durations = {
        point.attributes["check"]: point.count
        for point in metrics["visioncraft.health.check.duration"].data.data_points
    }
    assert durations == {"database:responseTime": 1, "redis:responseTime": 1}
    statuses = {
        (point.attributes["check"], point.attributes["status"]): point.value
        for point in metrics["visioncraft.health.check.status"].data.data_points
    }
    assert statuses == {
        ("database:responseTime", "pass"): 1,
        ("database:responseTime", "warn"): 0,
        ("database:responseTime", "fail"): 0,
        ("redis:responseTime", "pass"): 0,
        ("redis:responseTime", "warn"): 0,
        ("redis:responseTime", "fail"): 1,
    }


async def test_export_check_reports_last_failure(checker: HealthChecker) -> None:
    status = ExportStatus()
    checker.register("telemetryExport", export_check(status, ["traces", "logs"]), critical=False)
    before = await checker.report()
    status.record("traces", succeeded=True)
    status.record("logs", succeeded=False, error_type="ConnectionError")
    checker.cache_s = 0.0001
    await asyncio.sleep(0.001)

    after = await checker.report()
    await checker.aclose()

    assert before.results[0].status is HealthStatus.PASS
    assert before.results[0].observed_value is None
    result = after.results[0]
    assert result.status is HealthStatus.FAIL
    assert result.output is not None
    assert "the last export of logs failed" in result.output
    assert "(ConnectionError)" in result.output
    assert after.status is HealthStatus.WARN


@pytest.mark.parametrize(
    ("warn_below_mb", "fail_below_mb", "expected"),
    [
        (0.0, 0.0, HealthStatus.PASS),
        (1e12, 0.0, HealthStatus.WARN),
        (1e12, 1e12, HealthStatus.FAIL),
    ],
)
async def test_disk_check_thresholds(
    checker: HealthChecker,
    tmp_path: Path,
    warn_below_mb: float,
    fail_below_mb: float,
    expected: HealthStatus,
) -> None:
    check = disk_check(
        tmp_path / "not-made-yet",
        warn_below_mb=warn_below_mb,
        fail_below_mb=fail_below_mb,
        run_blocking=checker.run_blocking,
    )

    outcome = await check()
    await checker.aclose()

    assert outcome is not None
    assert outcome.status is expected
    assert outcome.observed_unit == "MB"
    assert isinstance(outcome.observed_value, int)
    assert (outcome.output is None) == (expected is HealthStatus.PASS)


@pytest.mark.parametrize(
    ("limit_bytes", "expected"),
    [(10**15, HealthStatus.PASS), (10**8 * 12, HealthStatus.WARN), (10**6, HealthStatus.FAIL)],
)
async def test_memory_check_thresholds(
    checker: HealthChecker, limit_bytes: int, expected: HealthStatus
) -> None:
    # The test process uses about 100 to 200 MB: 8 to 17 % of 1.2 GB, far above 1 MB.
    check = memory_check(
        warn_above_percent=5,
        fail_above_percent=50,
        limit_bytes=limit_bytes,
        run_blocking=checker.run_blocking,
    )

    outcome = await check()
    await checker.aclose()

    assert outcome.status is expected
    assert outcome.observed_unit == "percent"
