"""An OTLP receiver for tests: gRPC and OTLP/HTTP on 127.0.0.1, keeping what it receives.

`OtlpReceiver` serves the collector's trace, metrics and logs services over gRPC (with the
opentelemetry-proto service stubs) and `POST /v1/{traces,metrics,logs}` over HTTP (protobuf,
gzip or not) from background threads. Point the SDK at `grpc_endpoint` or `http_endpoint`
through OTEL_EXPORTER_OTLP_ENDPOINT. Received data is flattened into `spans`, `logs` and
`metric_names`; `raw` keeps every request body, for tests that search the bytes.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

POLL_INTERVAL_S = 0.05


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    resource: dict[str, Any]


@dataclass(frozen=True)
class ReceivedLog:
    body: Any
    severity_text: str
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.logs: list[ReceivedLog] = []
        self.metric_names: set[str] = set()
        self.raw: list[bytes] = []
        self.requests = {"grpc": 0, "http": 0}
        self._lock = threading.Lock()
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._grpc)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _MetricsService(self), self._grpc
        )
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsService(self), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(self))
        self._http.daemon_threads = True
        self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def endpoint(self, protocol: str) -> str:
        return self.grpc_endpoint if protocol == "grpc" else self.http_endpoint

    def __enter__(self) -> OtlpReceiver:
        self._grpc.start()
        self._http_thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._grpc.stop(grace=None)
        self._http.shutdown()
        self._http.server_close()

    def wait_for(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        """Poll `condition` until it is true or `timeout_s` passes; return its last value."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if condition():
                    return True
            time.sleep(POLL_INTERVAL_S)
        with self._lock:
            return condition()

    def span_tree(self, trace_id: str) -> str:
        """Return the span names of one trace as an indented tree, children in arrival order."""
        spans = [span for span in self.spans if span.trace_id == trace_id]
        ids = {span.span_id for span in spans}
        lines: list[str] = []

        def walk(parent: str, depth: int) -> None:
            for span in spans:
                if span.parent_span_id == parent:
                    lines.append(f"{'  ' * depth}{span.name}")
                    walk(span.span_id, depth + 1)

        for root in (span for span in spans if span.parent_span_id not in ids):
            lines.append(root.name)
            walk(root.span_id, 1)
        return "\n".join(lines)

    def receive_traces(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        received = [
            ReceivedSpan(
                name=span.name,
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                kind=span.kind,
                attributes=_attributes(span.attributes),
                status_code=span.status.code,
                resource=_attributes(resource_spans.resource.attributes),
            )
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self._lock:
            self.spans.extend(received)

    def receive_logs(self, request: logs_service_pb2.ExportLogsServiceRequest) -> None:
        received = [
            ReceivedLog(
                body=_value(record.body),
                severity_text=record.severity_text,
                trace_id=record.trace_id.hex(),
                span_id=record.span_id.hex(),
                attributes=_attributes(record.attributes),
            )
            for resource_logs in request.resource_logs
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]
        with self._lock:
            self.logs.extend(received)

    def receive_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        names = {
            metric.name
            for resource_metrics in request.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        }
        with self._lock:
            self.metric_names |= names

    def record_raw(self, body: bytes, protocol: str) -> None:
        with self._lock:
            self.raw.append(body)
            self.requests[protocol] += 1


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self.receiver.record_raw(request.SerializeToString(), "grpc")
        self.receiver.receive_traces(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self.receiver.record_raw(request.SerializeToString(), "grpc")
        self.receiver.receive_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self.receiver.record_raw(request.SerializeToString(), "grpc")
        self.receiver.receive_logs(request)
        return logs_service_pb2.ExportLogsServiceResponse()


HTTP_SIGNALS: dict[str, tuple[Any, Any, str]] = {
    "/v1/traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
        "receive_traces",
    ),
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
        "receive_metrics",
    ),
    "/v1/logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
        "receive_logs",
    ),
}


def _http_handler(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else each reply waits ~40 ms for a delayed ACK

        def do_POST(self) -> None:
            signal = HTTP_SIGNALS.get(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if signal is None:
                self._reply(404, b"")
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request_type, response_type, method = signal
            request = request_type()
            request.ParseFromString(body)
            receiver.record_raw(body, "http")
            getattr(receiver, method)(request)
            self._reply(200, response_type().SerializeToString())

        def _reply(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler
