"""A real Prometheus (Debian's package) scrapes the running service on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import LiveServer, create_key, free_port, make_settings, require_program
from monitoring_support import PrometheusServer

METRICS_TOKEN = "scrape-token-for-tests-81fa"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[PrometheusServer, LiveServer]]:
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
        with PrometheusServer(binary, config, tmp_path, free_port()) as prometheus:
            yield prometheus, server


def test_prometheus_finds_http_and_genai_series(
    prometheus: tuple[PrometheusServer, LiveServer],
) -> None:
    prometheus_server, server = prometheus
    key = create_key(server.settings)
    response = httpx.post(
        f"{server.base_url}/api/v1/images/generations",
        json={"prompt": "a lantern"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 200

    up = prometheus_server.wait_for('up{job="visioncraft"} == 1')
    http = prometheus_server.wait_for(
        'http_server_request_duration_seconds_count{http_route="/api/v1/images/generations"}'
    )
    genai = prometheus_server.wait_for("gen_ai_client_operation_duration_seconds_count")

    assert len(up) == 1
    assert http[0]["metric"]["http_request_method"] == "POST"
    assert http[0]["metric"]["http_response_status_code"] == "200"
    assert http[0]["value"][1] == "1"
    assert genai[0]["metric"]["gen_ai_request_model"] == "demo"
    assert genai[0]["metric"]["gen_ai_operation_name"] == "generate_content"
