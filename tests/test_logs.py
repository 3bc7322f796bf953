"""JSON log lines: their fields, and the trace id of the request on errors and access lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import make_settings
from fastapi.testclient import TestClient

from app.main import create_app
from telemetry import configure_logging
from telemetry.logs import SdkRepeatFilter

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def _lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_error_and_access_lines_carry_trace_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging(json_lines=True, level="INFO")
    app = create_app(make_settings(tmp_path))

    async def fail() -> None:
        raise RuntimeError("the disk is on fire")

    app.add_api_route("/api/v1/fail", fail)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/v1/fail", headers={"traceparent": TRACEPARENT})
    lines = _lines(capsys.readouterr().out)

    assert response.status_code == 500
    assert response.headers["traceresponse"].split("-")[1] == TRACE_ID
    request_id = response.headers["x-request-id"]
    (error,) = [line for line in lines if line["level"] == "ERROR"]
    assert list(error)[:7] == [
        "timestamp", "level", "logger", "message", "trace_id", "span_id", "request_id"
    ]  # fmt: skip
    assert error["trace_id"] == TRACE_ID
    assert error["request_id"] == request_id
    assert len(str(error["span_id"])) == 16
    assert "RuntimeError: the disk is on fire" in str(error["exception"])
    (access,) = [line for line in lines if line["logger"] == "visioncraft.access"]
    assert access["trace_id"] == TRACE_ID
    assert access["http_route"] == "/api/v1/fail"
    assert access["http_status"] == 500


def test_lines_outside_requests_have_no_trace(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging(json_lines=True, level="INFO")
    logging.getLogger("app.test").info("started %s", "now")
    (line,) = _lines(capsys.readouterr().out)

    assert line["message"] == "started now"
    assert line["trace_id"] is None
    assert line["request_id"] == "-"


def test_sdk_messages_pass_once_per_interval() -> None:
    limiter = SdkRepeatFilter(interval_s=60)

    def record(name: str, message: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, __file__, 1, message, (), None)

    queue_full = "Queue full, dropping %s."
    assert limiter.filter(record("opentelemetry.sdk._shared_internal", queue_full))
    assert not limiter.filter(record("opentelemetry.sdk._shared_internal", queue_full))
    assert limiter.filter(record("opentelemetry.sdk._shared_internal", "another message"))
    assert limiter.filter(record("app.generation", queue_full))
    assert limiter.filter(record("app.generation", queue_full))
