"""Health checks that need nothing of the app: OTLP export, free disk space and memory."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import TypeVar

import psutil

from telemetry.exporters import ExportStatus
from telemetry.health import CheckFunction, CheckOutcome, HealthStatus

T = TypeVar("T")
RunBlocking = Callable[[Callable[[], T]], Awaitable[T]]
BYTES_PER_MB = 1_000_000
# cgroup v1 reports "no limit" as a huge number near 2**63.
CGROUP_V1_NO_LIMIT_BYTES = 2**60
CGROUP_V2_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")
CGROUP_V1_MEMORY_LIMIT = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")


def export_check(
    status: ExportStatus, signals: Collection[str], clock: Callable[[], float] = time.monotonic
) -> CheckFunction:
    """Report the last OTLP export of each exporting signal; a failed last export fails.

    The observed value is the age in seconds of the oldest of those last exports. With no
    signal exporting, or before the first export, the check passes without a value.
    """

    async def check() -> CheckOutcome:
        outcomes = [outcome for signal in signals if (outcome := status.last(signal)) is not None]
        if not outcomes:
            return CheckOutcome(observed_unit="s")
        now = clock()
        oldest_age_s = max(outcome.age_s(now) for outcome in outcomes)
        failed = [outcome for outcome in outcomes if not outcome.succeeded]
        if not failed:
            return CheckOutcome(observed_value=round(oldest_age_s, 1), observed_unit="s")
        described = "; ".join(
            f"the last export of {outcome.signal} failed {outcome.age_s(now):.1f} s ago "
            f"({outcome.error_type})"
            for outcome in failed
        )
        return CheckOutcome(
            HealthStatus.FAIL,
            observed_value=round(oldest_age_s, 1),
            observed_unit="s",
            output=f"{described}; check that the collector is up",
        )

    return check


def _crossed(value: float, *, warn_at: float, fail_at: float) -> tuple[HealthStatus, float | None]:
    """Return the status of `value` against thresholds that it must not pass, and the one it passed."""
    if value > fail_at:
        return HealthStatus.FAIL, fail_at
    if value > warn_at:
        return HealthStatus.WARN, warn_at
    return HealthStatus.PASS, None


def existing_folder(path: Path) -> Path:
    """Return `path`, or its nearest parent that exists (the data folder is made on first use)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def disk_check(
    path: Path, *, warn_below_mb: float, fail_below_mb: float, run_blocking: RunBlocking[int]
) -> CheckFunction:
    """Report the free space, in MB, of the file system that contains `path`."""

    async def check() -> CheckOutcome:
        free_bytes = await run_blocking(lambda: psutil.disk_usage(str(existing_folder(path))).free)
        free_mb = free_bytes / BYTES_PER_MB
        # Less free space is worse, so compare the negated values.
        status, threshold = _crossed(-free_mb, warn_at=-warn_below_mb, fail_at=-fail_below_mb)
        output = None
        if threshold is not None:
            output = (
                f"{free_mb:.0f} MB free on the disk of {path}, below the threshold of "
                f"{-threshold:g} MB; free some space or grow the volume"
            )
        return CheckOutcome(
            status, observed_value=round(free_mb), observed_unit="MB", output=output
        )

    return check


def memory_limit_bytes() -> int:
    """Return the container's memory limit (cgroup v2, then v1), else the machine's memory."""
    try:
        text = CGROUP_V2_MEMORY_MAX.read_text().strip()
        if text != "max":
            return int(text)
    except (OSError, ValueError):
        pass
    try:
        limit = int(CGROUP_V1_MEMORY_LIMIT.read_text().strip())
        if limit < CGROUP_V1_NO_LIMIT_BYTES:
            return limit
    except (OSError, ValueError):
        pass
    total: int = psutil.virtual_memory().total
    return total


def memory_check(
    *,
    warn_above_percent: float,
    fail_above_percent: float,
    limit_bytes: int,
    run_blocking: RunBlocking[int],
) -> CheckFunction:
    """Report this process's resident memory as a percentage of `limit_bytes`."""
    process = psutil.Process()

    async def check() -> CheckOutcome:
        rss_bytes = await run_blocking(lambda: int(process.memory_info().rss))
        percent = rss_bytes / limit_bytes * 100
        status, threshold = _crossed(
            percent, warn_at=warn_above_percent, fail_at=fail_above_percent
        )
        output = None
        if threshold is not None:
            output = (
                f"resident memory {rss_bytes / BYTES_PER_MB:.0f} MB is {percent:.1f}% of the "
                f"limit of {limit_bytes / BYTES_PER_MB:.0f} MB, above the threshold of "
                f"{threshold:g}%"
            )
        return CheckOutcome(
            status, observed_value=round(percent, 1), observed_unit="percent", output=output
        )

    return check
