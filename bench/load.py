"""The load generator: `hey` in its own process, bounded in requests and time.

`hey` (apt-get install hey) is a small Go program, so the load it sends costs little CPU next to
the service under test. It writes one CSV row per request that received a response. A request
without a response (refused, reset, timed out) has no row, so it is counted as an error here.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import statistics
import subprocess
from collections import Counter
from dataclasses import dataclass

# hey gives up on one request after this long; the whole run is stopped after its own bound.
REQUEST_TIMEOUT_S = 60


@dataclass(frozen=True)
class LoadResult:
    """The responses of one load run: latencies in milliseconds, sorted, and status codes."""

    requested: int
    elapsed_s: float
    latencies_ms: list[float]
    statuses: Counter[int]

    @property
    def responded(self) -> int:
        return len(self.latencies_ms)

    @property
    def errors(self) -> int:
        """Requests without a response, plus responses other than 2xx."""
        failed = sum(count for status, count in self.statuses.items() if not 200 <= status < 300)
        return self.requested - self.responded + failed

    @property
    def throughput(self) -> float:
        """Responses per second over the run's wall time."""
        return self.responded / self.elapsed_s

    def percentile(self, fraction: float) -> float:
        """Return the latency below which `fraction` of the responses fall."""
        return nearest_rank(self.latencies_ms, fraction)

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p95(self) -> float:
        return self.percentile(0.95)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)


def nearest_rank(ordered: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile `fraction` (0 to 1) of the sorted values `ordered`."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def require_hey() -> None:
    if shutil.which("hey") is None:
        raise SystemExit(
            "The benchmarks send their load with `hey`, which is not installed. "
            "Install it with `apt-get install hey` (Debian and Ubuntu), then run `make bench` again."
        )


def run_hey(
    url: str,
    *,
    requests: int,
    concurrency: int,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    json_body: str | None = None,
    time_limit_s: float = 300,
) -> LoadResult:
    """Send `requests` requests to `url`, `concurrency` at a time, and return what came back.

    Raises subprocess.TimeoutExpired when hey has not finished after `time_limit_s`.
    """
    command = ["hey", "-n", str(requests), "-c", str(concurrency), "-m", method]
    command += ["-t", str(REQUEST_TIMEOUT_S), "-o", "csv"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if json_body is not None:
        command += ["-T", "application/json", "-d", json_body]
    output = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=time_limit_s
    ).stdout
    return parse_csv(output, requested=requests)


def parse_csv(output: str, *, requested: int) -> LoadResult:
    """Read hey's CSV: one row per answered request, with its latency and its start offset."""
    latencies_ms = []
    statuses: Counter[int] = Counter()
    finished_s = 0.0
    for row in csv.DictReader(io.StringIO(output)):
        latency_s = float(row["response-time"])
        latencies_ms.append(latency_s * 1000)
        statuses[int(row["status-code"])] += 1
        finished_s = max(finished_s, float(row["offset"]) + latency_s)
    if not latencies_ms:
        raise RuntimeError(f"hey received no response to any of {requested} requests")
    latencies_ms.sort()
    return LoadResult(requested, finished_s, latencies_ms, statuses)
