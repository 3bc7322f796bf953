"""The OpenTelemetry providers of one app: built when the app is created, started and shut
down by its lifespan.

Building is cheap and has no side effects: the providers, a Prometheus reader on a registry
of this app's own, and no threads. `start()` adds the OTLP exporters that the environment
requests and the bridge from stdlib logging; `shutdown(timeout_s)` flushes what is buffered and
returns by its deadline even when the collector does not answer. No global provider is set,
so two apps can live in one process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler
from prometheus_client import CollectorRegistry

from telemetry.environment import Protocol, TelemetryEnvironment
from telemetry.exporters import (
    ExportReporter,
    ExportStatus,
    GuardedLogExporter,
    GuardedMetricExporter,
    GuardedSpanExporter,
    abandon,
)
from telemetry.redaction import QueryRedactor

logger = logging.getLogger(__name__)

SDK_METRICS_VARIABLE = "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"


@dataclass(frozen=True)
class ServiceIdentity:
    """The sender of the telemetry. OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override it."""

    name: str
    version: str
    environment: str


def build_resource(identity: ServiceIdentity) -> Resource:
    """Build the resource: our defaults, then OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME.

    Later ones win, in the order the OpenTelemetry specification gives.
    """
    defaults = Resource.create(
        {
            "service.name": identity.name,
            "service.version": identity.version,
            "service.instance.id": str(uuid.uuid4()),
            "deployment.environment.name": identity.environment,
            # The older key, which many dashboards and Cloud Trace filters still read.
            "deployment.environment": identity.environment,
        }
    )
    return defaults.merge(OTELResourceDetector().detect())


class Telemetry:
    """The tracer, meter and logger providers of one app and its Prometheus registry.

    `views` shape the app's metrics (bucket boundaries, for one); the values of
    `secret_query_parameters` are blanked in spans; `metric_readers` are added beside the
    Prometheus reader (tests pass an in-memory one). The OTEL_* variables are read from the
    environment when the object is built.
    """

    def __init__(
        self,
        identity: ServiceIdentity,
        *,
        views: Sequence[View] = (),
        secret_query_parameters: Sequence[str] = (),
        metric_readers: Sequence[MetricReader] = (),
    ) -> None:
        self.environment = TelemetryEnvironment.from_environ()
        self.resource = build_resource(identity)
        self.export_status = ExportStatus()
        self.prometheus_registry = CollectorRegistry(auto_describe=True)
        # Scope labels would repeat on every series without telling an operator anything.
        self._prometheus_reader = PrometheusMetricReader(
            registry=self.prometheus_registry, scope_info_enabled=False
        )
        self.meter_provider = MeterProvider(
            resource=self.resource,
            metric_readers=[self._prometheus_reader, *metric_readers],
            views=list(views),
            shutdown_on_exit=False,
        )
        self.tracer_provider = TracerProvider(
            resource=self.resource, sampler=self._sampler(), shutdown_on_exit=False
        )
        if secret_query_parameters:
            self.tracer_provider.add_span_processor(QueryRedactor(secret_query_parameters))
        self.logger_provider = LoggerProvider(resource=self.resource, shutdown_on_exit=False)
        self._exporters: list[SpanExporter | MetricExporter | LogRecordExporter] = []
        self._log_handler: logging.Handler | None = None
        self._started = False

    def _sampler(self) -> Sampler | None:
        """Return None (the SDK then reads OTEL_TRACES_SAMPLER), or ALWAYS_OFF without export.

        Spans that no exporter sends would only cost time. Unrecorded spans still carry trace
        ids, so logs, `traceresponse` and outgoing `traceparent` headers keep them.
        """
        return None if self.environment.exports("traces") else ALWAYS_OFF

    @property
    def capture_message_content(self) -> bool:
        return self.environment.capture_message_content

    def start(self) -> None:
        """Add the OTLP exporters for each signal with an endpoint, and the log bridge."""
        if self._started:
            return
        self._started = True
        if self.environment.sdk_disabled:
            logger.info("OTEL_SDK_DISABLED is true: no metrics, traces or OTLP logs are recorded")
            return
        protocols = self.environment.otlp_protocols
        if not protocols:
            return
        # The SDK's own metrics (queue size and capacity, dropped spans and logs, exports by
        # outcome) show an operator a collector that is down. They are off unless this is set.
        os.environ.setdefault(SDK_METRICS_VARIABLE, "true")
        reporter = ExportReporter(
            self.export_status,
            self.meter_provider,
            destinations={signal: self._destination(signal) for signal in protocols},
        )
        if "traces" in protocols:
            span_exporter = GuardedSpanExporter(_span_exporter(protocols["traces"]), reporter)
            self._exporters.append(span_exporter)
            self.tracer_provider.add_span_processor(
                BatchSpanProcessor(span_exporter, meter_provider=self.meter_provider)
            )
        if "metrics" in protocols:
            metric_exporter = GuardedMetricExporter(
                _metric_exporter(protocols["metrics"]), reporter
            )
            self._exporters.append(metric_exporter)
            self.meter_provider.add_metric_reader(PeriodicExportingMetricReader(metric_exporter))
        if "logs" in protocols:
            log_exporter = GuardedLogExporter(_log_exporter(protocols["logs"]), reporter)
            self._exporters.append(log_exporter)
            self.logger_provider.add_log_record_processor(
                BatchLogRecordProcessor(log_exporter, meter_provider=self.meter_provider)
            )
            self._attach_log_bridge()
        logger.info(
            "OTLP export on: %s",
            ", ".join(
                f"{signal} over {protocol.value} to {self._destination(signal)}"
                for signal, protocol in protocols.items()
            ),
        )

    def shutdown(self, timeout_s: float) -> bool:
        """Flush and stop every provider; give up at the deadline. Return whether all finished.

        The SDK's own shutdown waits up to 30 s per processor and retries exports on, so each
        provider shuts down in a thread of its own. At the deadline the threads are left behind
        and the exporters stop their retries.
        """
        self._detach_log_bridge()
        deadline = time.monotonic() + timeout_s
        workers = [
            _start_thread(f"shutdown-{name}", stop)
            for name, stop in (
                ("traces", self.tracer_provider.shutdown),
                ("metrics", lambda: self.meter_provider.shutdown(timeout_millis=timeout_s * 1000)),
                ("logs", self.logger_provider.shutdown),
            )
        ]
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        unfinished = [worker.name for worker in workers if worker.is_alive()]
        if not unfinished:
            return True
        for exporter in self._exporters:
            abandon(exporter)
        logger.warning(
            "telemetry flush gave up after %.1f s (%s); unsent data was dropped",
            timeout_s,
            ", ".join(unfinished),
        )
        return False

    def _attach_log_bridge(self) -> None:
        handler = LoggingHandler(logger_provider=self.logger_provider)
        handler.addFilter(_not_from_opentelemetry)
        logging.getLogger().addHandler(handler)
        self._log_handler = handler

    def _detach_log_bridge(self) -> None:
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler = None

    def _destination(self, signal: str) -> str:
        """Return the collector's address for log messages, without any user:password part."""
        specific = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "")
        endpoint = specific or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        parts = urlsplit(endpoint.strip())
        netloc = parts.hostname or ""
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", "")) or "(unset)"


def _not_from_opentelemetry(record: logging.LogRecord) -> bool:
    # The SDK's own messages about failing exports would feed the exporter that fails.
    return not record.name.startswith("opentelemetry")


def _start_thread(name: str, target: Callable[[], Any]) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def _span_exporter(protocol: Protocol) -> SpanExporter:
    if protocol is Protocol.GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def _metric_exporter(protocol: Protocol) -> MetricExporter:
    if protocol is Protocol.GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter()


def _log_exporter(protocol: Protocol) -> LogRecordExporter:
    if protocol is Protocol.GRPC:
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HttpLogExporter,
    )

    return HttpLogExporter()
