"""The providers and what the OTEL_* variables decide."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import make_settings
from fastapi.testclient import TestClient

from app.main import create_app
from telemetry import ServiceIdentity, Telemetry, TelemetryEnvironment
from telemetry.environment import Protocol

IDENTITY = ServiceIdentity("visioncraft", "1.2.3", "production")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, {}),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
            dict.fromkeys(("traces", "metrics", "logs"), Protocol.HTTP_PROTOBUF),
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            dict.fromkeys(("traces", "metrics", "logs"), Protocol.GRPC),
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            },
            {"traces": Protocol.GRPC},
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_LOGS_EXPORTER": "none"},
            dict.fromkeys(("traces", "metrics"), Protocol.HTTP_PROTOBUF),
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, {}),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            },
            dict.fromkeys(("traces", "metrics", "logs"), Protocol.HTTP_PROTOBUF),
        ),
    ],
)
def test_environment_chooses_otlp_signals(
    environ: dict[str, str], expected: dict[str, Protocol]
) -> None:
    assert dict(TelemetryEnvironment.from_environ(environ).otlp_protocols) == expected


def test_capture_content_only_when_true() -> None:
    variable = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

    assert TelemetryEnvironment.from_environ({variable: "True"}).capture_message_content
    assert not TelemetryEnvironment.from_environ({variable: "1"}).capture_message_content
    assert not TelemetryEnvironment.from_environ({}).capture_message_content


def test_resource_takes_variables_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES",
        "service.name=from-attributes,deployment.environment.name=staging,k8s.pod.name=pod-1",
    )
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-service-name")
    attributes = Telemetry(IDENTITY).resource.attributes

    assert attributes["service.name"] == "from-service-name"
    assert attributes["deployment.environment.name"] == "staging"
    assert attributes["k8s.pod.name"] == "pod-1"
    assert attributes["service.version"] == "1.2.3"
    assert len(str(attributes["service.instance.id"])) == 36


def test_sampler_comes_from_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")

    description = Telemetry(IDENTITY).tracer_provider.sampler.get_description()

    assert description.startswith("ParentBased{root:TraceIdRatioBased{0.25}")


def test_no_endpoint_starts_no_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    telemetry = Telemetry(IDENTITY)
    telemetry.start()
    span = telemetry.tracer_provider.get_tracer("test").start_span("unexported")

    assert not span.is_recording()
    assert span.get_span_context().is_valid
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("OtelBatch")]
    assert telemetry.export_status.snapshot() == {}
    assert telemetry.shutdown(timeout_s=1)


def test_sdk_disabled_records_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with TestClient(create_app(make_settings(tmp_path))) as client:
        client.get("/api/v1/models")
        response = client.get("/metrics")

    assert response.status_code == 200
    assert "http_server_request_duration_seconds" not in response.text
    assert "traceresponse" not in response.headers


def test_two_apps_keep_their_own_metrics(tmp_path: Path) -> None:
    first = TestClient(create_app(make_settings(tmp_path / "a")))
    second = TestClient(create_app(make_settings(tmp_path / "b")))
    with first, second:
        first.get("/api/v1/models")
        first_text = first.get("/metrics").text
        second_text = second.get("/metrics").text

    assert 'http_route="/api/v1/models"' in first_text
    assert 'http_route="/api/v1/models"' not in second_text
