"""OTLP exporters wrapped so that a failing collector never reaches a request.

Each wrapper records the outcome of every export in an `ExportStatus` (health checks read the
last outcome and its age), counts failures in `visioncraft.telemetry.export.failures`, and logs a
failure at most once a minute per signal. Requests never wait on an exporter: the batch processors
and the periodic reader call these from their own threads.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

logger = logging.getLogger(__name__)

FAILURE_LOG_INTERVAL_S = 60.0
R = TypeVar("R")


@dataclass(frozen=True)
class ExportOutcome:
    """The last export of one signal: whether it succeeded, when (UTC), and the error type."""

    signal: str
    succeeded: bool
    finished_at: datetime
    finished_monotonic: float
    error_type: str | None = None

    def age_s(self, now_monotonic: float | None = None) -> float:
        now = time.monotonic() if now_monotonic is None else now_monotonic
        return max(0.0, now - self.finished_monotonic)


class ExportStatus:
    """The last OTLP export outcome of each signal. Safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: dict[str, ExportOutcome] = {}

    def record(self, signal: str, *, succeeded: bool, error_type: str | None = None) -> None:
        outcome = ExportOutcome(
            signal=signal,
            succeeded=succeeded,
            finished_at=datetime.now(UTC),
            finished_monotonic=time.monotonic(),
            error_type=error_type,
        )
        with self._lock:
            self._outcomes[signal] = outcome

    def last(self, signal: str) -> ExportOutcome | None:
        with self._lock:
            return self._outcomes.get(signal)

    def snapshot(self) -> dict[str, ExportOutcome]:
        with self._lock:
            return dict(self._outcomes)


class ExportReporter:
    """Records outcomes, counts failures and logs them at most once per interval per signal."""

    def __init__(
        self,
        status: ExportStatus,
        meter_provider: MeterProvider,
        *,
        destinations: dict[str, str],
        log_interval_s: float = FAILURE_LOG_INTERVAL_S,
    ) -> None:
        self.status = status
        self._destinations = destinations
        self._log_interval_s = log_interval_s
        self._lock = threading.Lock()
        self._last_logged: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}
        meter = meter_provider.get_meter(__name__)
        self._failures = meter.create_counter(
            "visioncraft.telemetry.export.failures",
            unit="{export}",
            description="OTLP exports that failed; their data was dropped.",
        )

    def guard(self, signal: str, export: Callable[[], R], *, success: R, failure: R) -> R:
        """Run one export and record its outcome; an exception becomes `failure`."""
        try:
            result = export()
        except Exception as error:  # the telemetry boundary: a failed export only drops data
            self.failed(signal, type(error).__name__)
            return failure
        if result is success:
            self.succeeded(signal)
        else:
            self.failed(signal, "export_failed")
        return result

    def succeeded(self, signal: str) -> None:
        self.status.record(signal, succeeded=True)

    def failed(self, signal: str, error_type: str) -> None:
        self.status.record(signal, succeeded=False, error_type=error_type)
        self._failures.add(1, {"signal": signal, "error.type": error_type})
        now = time.monotonic()
        with self._lock:
            last = self._last_logged.get(signal)
            if last is not None and now - last < self._log_interval_s:
                self._unlogged[signal] = self._unlogged.get(signal, 0) + 1
                return
            self._last_logged[signal] = now
            skipped = self._unlogged.pop(signal, 0)
        logger.warning(
            "OTLP export of %s to %s failed (%s); the batch was dropped and requests are not "
            "affected. %s more failures since the last message; check that the collector is up",
            signal,
            self._destinations.get(signal, "the collector"),
            error_type,
            skipped,
        )


class GuardedSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, reporter: ExportReporter) -> None:
        self.inner = inner
        self._reporter = reporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._reporter.guard(
            "traces",
            lambda: self.inner.export(spans),
            success=SpanExportResult.SUCCESS,
            failure=SpanExportResult.FAILURE,
        )

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class GuardedLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, reporter: ExportReporter) -> None:
        self.inner = inner
        self._reporter = reporter

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return self._reporter.guard(
            "logs",
            lambda: self.inner.export(batch),
            success=LogRecordExportResult.SUCCESS,
            failure=LogRecordExportResult.FAILURE,
        )

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class GuardedMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, reporter: ExportReporter) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self._reporter = reporter

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return self._reporter.guard(
            "metrics",
            lambda: self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs),
            success=MetricExportResult.SUCCESS,
            failure=MetricExportResult.FAILURE,
        )

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def abandon(exporter: SpanExporter | LogRecordExporter | MetricExporter) -> None:
    """Stop an exporter's retries at once; called when the flush at shutdown runs out of time."""
    shutdown: Callable[..., None] = getattr(exporter, "inner", exporter).shutdown
    try:
        if "timeout_millis" in inspect.signature(shutdown).parameters:
            shutdown(timeout_millis=0)
        else:
            shutdown()
    except Exception:  # the exporter may be half shut down already; nothing is left to save
        logger.debug("stopping the %s failed", type(exporter).__name__, exc_info=True)
