"""OTLP export to a receiver on 127.0.0.1, over gRPC and OTLP/HTTP, with the real SDK."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from conftest import create_key, export_to, free_port, make_settings
from fastapi.testclient import TestClient

from app.main import create_app
from fakes.gemini_api import TEST_API_KEY, FakeGeminiAPI, blocked_prompt, server_error
from fakes.otlp_receiver import OtlpReceiver, ReceivedSpan

GENERATIONS = "/api/v1/images/generations"
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
STATUS_ERROR = 2


def _use_fake_gemini(monkeypatch: pytest.MonkeyPatch, fake: FakeGeminiAPI) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.base_url)


def _children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [span for span in spans if span.parent_span_id == parent.span_id]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_generation_trace_logs_and_metrics_reach_receiver(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    otlp_receiver: OtlpReceiver,
    fake_gemini: FakeGeminiAPI,
    protocol: str,
) -> None:
    caplog.set_level(logging.INFO)
    export_to(monkeypatch, otlp_receiver.endpoint(protocol), protocol)
    _use_fake_gemini(monkeypatch, fake_gemini)
    settings = make_settings(tmp_path, image_backend="gemini")
    with TestClient(create_app(settings)) as client:
        key = create_key(settings)
        response = client.post(
            GENERATIONS,
            json={"prompt": "a heron in the rain"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200, response.text
        trace_id = response.headers["traceresponse"].split("-")[1]
        # The final export at shutdown gets only one export interval, so wait for a periodic one.
        assert otlp_receiver.wait_for(
            lambda: (
                {"http.server.request.duration", "gen_ai.client.token.usage"}
                <= otlp_receiver.metric_names
            )
        )

    spans = [span for span in otlp_receiver.spans if span.trace_id == trace_id]
    print(otlp_receiver.span_tree(trace_id))
    (server,) = [span for span in spans if span.kind == SPAN_KIND_SERVER]
    assert server.name == "POST /api/v1/images/generations"
    assert server.attributes["http.route"] == "/api/v1/images/generations"
    assert server.attributes["http.response.status_code"] == 200
    (generation,) = [span for span in spans if span.name.startswith("generate_content")]
    assert generation.parent_span_id == server.span_id
    assert generation.name == "generate_content gemini-3.1-flash-image"
    assert generation.attributes["gen_ai.operation.name"] == "generate_content"
    assert generation.attributes["gen_ai.provider.name"] == "gcp.gemini"
    assert generation.attributes["gen_ai.request.model"] == "gemini-3.1-flash-image"
    assert generation.attributes["gen_ai.response.model"] == "gemini-3.1-flash-image"
    assert generation.attributes["gen_ai.request.choice.count"] == 1
    assert generation.attributes["visioncraft.generation.outcome"] == "success"
    assert "gen_ai.input.messages" not in generation.attributes
    children = _children(spans, generation)
    http_calls = [span for span in children if span.name == "POST"]
    assert len(http_calls) == 1
    assert http_calls[0].kind == SPAN_KIND_CLIENT
    assert http_calls[0].attributes["http.response.status_code"] == 200
    assert http_calls[0].attributes["server.address"] == "127.0.0.1"
    assert {
        span.attributes["db.operation.name"] for span in children if span not in http_calls
    } >= {"INSERT"}
    assert server.resource["service.name"] == "visioncraft"
    assert server.resource["deployment.environment.name"] == "development"

    access_logs = [log for log in otlp_receiver.logs if log.attributes.get("http_route")]
    assert [log.trace_id for log in access_logs if log.attributes["http_status"] == 200] == [
        trace_id
    ]
    assert "gen_ai.client.operation.duration" in otlp_receiver.metric_names
    assert otlp_receiver.requests["grpc" if protocol == "grpc" else "http"] > 0


def test_failed_generation_logs_with_its_trace(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    otlp_receiver: OtlpReceiver,
    fake_gemini: FakeGeminiAPI,
) -> None:
    caplog.set_level(logging.INFO)
    export_to(monkeypatch, otlp_receiver.http_endpoint, "http/protobuf")
    _use_fake_gemini(monkeypatch, fake_gemini)
    fake_gemini.enqueue(server_error())
    settings = make_settings(tmp_path, image_backend="gemini")
    with TestClient(create_app(settings)) as client:
        key = create_key(settings)
        response = client.post(
            GENERATIONS, json={"prompt": "a storm"}, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 502
        trace_id = response.headers["traceresponse"].split("-")[1]

    failures = [log for log in otlp_receiver.logs if log.attributes.get("reason")]
    assert [(log.trace_id, log.severity_text) for log in failures] == [(trace_id, "WARN")]
    (generation,) = [
        span
        for span in otlp_receiver.spans
        if span.trace_id == trace_id and span.name.startswith("generate_content")
    ]
    assert generation.attributes["error.type"] == "backend_error"
    assert generation.status_code == STATUS_ERROR


def test_request_then_shutdown_still_delivers_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, otlp_receiver: OtlpReceiver
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.grpc_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # only the flush at shutdown sends
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        key = create_key(settings)
        response = client.get("/api/v1/models", headers={"Authorization": f"Bearer {key}"})
        trace_id = response.headers["traceresponse"].split("-")[1]

    assert [span.name for span in otlp_receiver.spans if span.kind == SPAN_KIND_SERVER] == [
        "GET /api/v1/models"
    ]
    request_spans = [span for span in otlp_receiver.spans if span.trace_id == trace_id]
    assert "SELECT sqlite" in [span.name for span in request_spans]  # the key lookup


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_collector_down_keeps_requests_and_shutdown_bounded(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    protocol: str,
) -> None:
    export_to(monkeypatch, f"http://127.0.0.1:{free_port()}", protocol)
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "16")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    flush_s = 1.0
    settings = make_settings(tmp_path, telemetry_flush_s=flush_s)
    app = create_app(settings)
    with TestClient(app) as client:
        key = create_key(settings)
        auth = {"Authorization": f"Bearer {key}"}
        statuses = [
            client.post(GENERATIONS, json={"prompt": f"a kite {index}"}, headers=auth).status_code
            for index in range(20)
        ]
        deadline = time.monotonic() + 15
        while app.state.telemetry.export_status.last("traces") is None:
            assert time.monotonic() < deadline, "no export finished within 15 s"
            time.sleep(0.05)
        metrics = client.get("/metrics").text
        exiting = time.monotonic()
        client.__exit__(None, None, None)
        shutdown_s = time.monotonic() - exiting

    assert statuses == [200] * 20
    outcome = app.state.telemetry.export_status.last("traces")
    assert outcome is not None and not outcome.succeeded
    assert (
        'visioncraft_telemetry_export_failures_total{error_type="export_failed",signal="traces"}'
        in metrics
    )
    queue_sizes = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("otel_sdk_processor_span_queue_size{")
    ]
    assert queue_sizes and max(queue_sizes) <= 16
    assert 'error_type="queue_full"' in metrics
    # The whole lifespan shutdown, not only the flush, stays near its budget.
    assert shutdown_s < flush_s + 3.0
    failure_messages = [record for record in caplog.records if record.name == "telemetry.exporters"]
    assert len([r for r in failure_messages if "traces" in r.getMessage()]) <= 1


def test_prompt_recorded_only_when_capture_is_on(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    otlp_receiver: OtlpReceiver,
    fake_gemini: FakeGeminiAPI,
) -> None:
    export_to(monkeypatch, otlp_receiver.http_endpoint, "http/protobuf")
    _use_fake_gemini(monkeypatch, fake_gemini)
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    fake_gemini.enqueue(blocked_prompt())
    prompt = "a very long prompt " * 200  # 3,800 characters
    settings = make_settings(tmp_path, image_backend="gemini")
    with TestClient(create_app(settings)) as client:
        key = create_key(settings)
        response = client.post(
            GENERATIONS, json={"prompt": prompt}, headers={"Authorization": f"Bearer {key}"}
        )
        metrics = client.get("/metrics").text

    assert response.status_code == 422
    (generation,) = [span for span in otlp_receiver.spans if span.name.startswith("generate_")]
    (message,) = json.loads(generation.attributes["gen_ai.input.messages"])
    content = message["parts"][0]["content"]
    assert len(content) == 1000
    assert content == prompt[:999] + "…"
    assert generation.attributes["error.type"] == "content_policy_violation"
    (failure,) = [log for log in otlp_receiver.logs if log.attributes.get("reason")]
    assert failure.attributes["prompt"] == content
    blocks = 'visioncraft_safety_blocks_total{backend="gemini",stage="input"} 1.0'
    assert blocks in metrics


def test_unsampled_request_makes_no_statement_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, otlp_receiver: OtlpReceiver
) -> None:
    export_to(monkeypatch, otlp_receiver.grpc_endpoint, "grpc")
    settings = make_settings(tmp_path)
    sampled = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    unsampled = "00-" + "3" * 32 + "-" + "4" * 16 + "-00"
    with TestClient(create_app(settings)) as client:
        key = create_key(settings)
        for traceparent in (unsampled, sampled):
            response = client.get(
                "/api/v1/account",
                headers={"Authorization": f"Bearer {key}", "traceparent": traceparent},
            )
            assert response.status_code == 200

    traces = {span.trace_id for span in otlp_receiver.spans if span.name == "SELECT sqlite"}
    assert "1" * 32 in traces
    assert "3" * 32 not in traces
