"""The access log: one line per request with method, route, status, duration and request id."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from fastapi.testclient import TestClient

from telemetry.logs import JsonFormatter


def test_one_line_per_request_with_route_template(
    client: TestClient, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="visioncraft.access")
    response = client.get("/api/v1/images/img_01M91BYEA0CCCAK7TRYNTPM3AK", headers=auth)
    records = [record for record in caplog.records if record.name == "visioncraft.access"]

    assert len(records) == 1
    record = records[0]
    assert record.http_method == "GET"  # type: ignore[attr-defined]
    assert record.http_route == "/api/v1/images/{image_id}"  # type: ignore[attr-defined]
    assert record.http_status == 404  # type: ignore[attr-defined]
    assert record.duration_ms >= 0  # type: ignore[attr-defined]
    assert record.request_id == response.headers["x-request-id"]  # type: ignore[attr-defined]


def test_log_never_contains_the_key(
    client: TestClient, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client.post("/api/v1/images/generations", json={"prompt": "a kite"}, headers=auth)
    client.get("/api/v1/images", headers={"Authorization": auth["Authorization"][:-3] + "abc"})
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    secret = auth["Authorization"].removeprefix("Bearer ")

    assert lines
    assert all(secret not in line for line in lines)
    assert all(secret[:40] not in line for line in lines)


def test_json_formatter_writes_extras_and_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "failed %s", ("job",), exc_info=exc_info
    )
    record.request_id = "req_1"
    line = json.loads(JsonFormatter().format(record))

    assert line["message"] == "failed job"
    assert line["level"] == "ERROR"
    assert line["request_id"] == "req_1"
    assert "ValueError: boom" in line["exception"]


def test_plain_starlette_route_is_named(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="visioncraft.access")
    client.get("/docs")
    records = [record for record in caplog.records if record.name == "visioncraft.access"]

    assert records[-1].http_route == "/docs"  # type: ignore[attr-defined]


def test_unmatched_path_has_one_label(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="visioncraft.access")
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    routes = {record.http_route for record in caplog.records if record.name == "visioncraft.access"}  # type: ignore[attr-defined]

    assert routes == {"(unmatched)"}
