"""A real Prometheus (Debian's package) scrapes the running service on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import LiveServer, create_key, free_port, make_settings, require_program

METRICS_TOKEN = "scrape-token-for-tests-81fa"
UP_TIMEOUT_S = 20.0  # a fresh Prometheus reports its first `up == 1` after about 5-6 s


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, LiveServer]]:
    """Our service with a METRICS_TOKEN, and a Prometheus that scrapes it every second."""
    binary = require_program("prometheus", "prometheus")
    settings = make_settings(tmp_path / "service", port=free_port(), metrics_token=METRICS_TOKEN)
    with LiveServer(settings) as server:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: visioncraft\n"
            "    authorization:\n"
            f"      credentials: {METRICS_TOKEN}\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{settings.port}']\n"
        )
        port = free_port()
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield f"http://127.0.0.1:{port}", server
        finally:
            process.terminate()
            process.wait(timeout=10)


def _query(base_url: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own server
            payload = json.load(response)
    except OSError:
        return []
    result: list[dict[str, Any]] = payload["data"]["result"]
    return result


def _wait_for(base_url: str, promql: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + UP_TIMEOUT_S
    while time.monotonic() < deadline:
        result = _query(base_url, promql)
        if result:
            return result
        time.sleep(0.5)
    return _query(base_url, promql)


def test_prometheus_finds_http_and_genai_series(prometheus: tuple[str, LiveServer]) -> None:
    base_url, server = prometheus
    key = create_key(server.settings)
    response = httpx.post(
        f"{server.base_url}/api/v1/images/generations",
        json={"prompt": "a lantern"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 200

    up = _wait_for(base_url, 'up{job="visioncraft"} == 1')
    http = _wait_for(
        base_url,
        'http_server_request_duration_seconds_count{http_route="/api/v1/images/generations"}',
    )
    genai = _wait_for(base_url, "gen_ai_client_operation_duration_seconds_count")

    assert len(up) == 1
    assert http[0]["metric"]["http_request_method"] == "POST"
    assert http[0]["metric"]["http_response_status_code"] == "200"
    assert http[0]["value"][1] == "1"
    assert genai[0]["metric"]["gen_ai_request_model"] == "demo"
    assert genai[0]["metric"]["gen_ai_operation_name"] == "generate_content"
