"""/metrics and the JSON metrics: formats, the token, promtool, pinned names and units."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import create_key, make_settings, require_program
from fastapi.testclient import TestClient
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.settings import Settings
from fakes.gemini_api import TEST_API_KEY, FakeGeminiAPI, blocked_prompt

GENERATIONS = "/api/v1/images/generations"
GOLDEN_NAMES = Path(__file__).parent / "golden" / "metric_names.txt"
METRICS_TOKEN = "metrics-token-for-tests-5d1c"
MODEL = "gemini-3.1-flash-image"
PRODUCT_PREFIXES = ("visioncraft_", "gen_ai_")


@pytest.fixture
def busy_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_gemini: FakeGeminiAPI
) -> Iterator[TestClient]:
    """An app on the gemini backend that has served every kind of request the metrics count."""
    monkeypatch.setenv("GOOGLE_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.base_url)
    settings = make_settings(
        tmp_path,
        image_backend="gemini",
        upstream_cost_per_image_usd={"1K": 0.04, "2K": 0.1, "4K": 0.15},
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        make_traffic(client, settings, fake_gemini)
        yield client


def make_traffic(client: TestClient, settings: Settings, fake_gemini: FakeGeminiAPI) -> None:
    """Send a generation, its replay, a rejected reuse, a blocked prompt and three 404s."""
    fake_gemini.reply_when_prompt_contains("forbidden", blocked_prompt())
    auth = {"Authorization": f"Bearer {create_key(settings)}"}
    retry = {**auth, "Idempotency-Key": "kite-1"}
    for body, headers, status in (
        ({"prompt": "a kite", "n": 2}, retry, 200),
        ({"prompt": "a kite", "n": 2}, retry, 200),
        ({"prompt": "another kite"}, retry, 422),
        ({"prompt": "a forbidden kite"}, auth, 422),
    ):
        assert client.post(GENERATIONS, json=body, headers=headers).status_code == status
    assert client.get("/api/v1/images/img_0000000000000000", headers=auth).status_code == 404
    assert client.get("/no/such/path").status_code == 404
    assert client.get("/no/other/path").status_code == 404


def test_metrics_answers_text_format_without_redirect(busy_client: TestClient) -> None:
    response = busy_client.get("/metrics", follow_redirects=False)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "http_server_request_duration_seconds_bucket{" in response.text


def test_metrics_serves_openmetrics_when_asked(busy_client: TestClient) -> None:
    response = busy_client.get("/metrics", headers={"Accept": "application/openmetrics-text"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_metrics_pass_promtool(busy_client: TestClient) -> None:
    text = busy_client.get("/metrics").text

    result = subprocess.run(
        [require_program("promtool", "prometheus"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_metric_names_and_units_match_golden_file(busy_client: TestClient) -> None:
    text = busy_client.get("/metrics", headers={"Accept": "application/openmetrics-text"}).text
    families = sorted(
        f"{family.name} {family.type} {family.unit or '-'}" for family in openmetrics_families(text)
    )

    assert families == GOLDEN_NAMES.read_text().split("\n")[:-1]


def test_product_metrics_count_what_happened(busy_client: TestClient) -> None:
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(busy_client.get("/metrics").text)
        for sample in family.samples
    }
    gemini = (("backend", "gemini"), ("model", MODEL))
    success = (*gemini, ("outcome", "success"))
    blocked = (*gemini, ("outcome", "blocked"))
    reused = (("backend", "gemini"), ("reason", "idempotency_key_reused"))
    violation = (("backend", "gemini"), ("reason", "content_policy_violation"))

    assert samples[("visioncraft_images_generated_total", success)] == 2
    assert samples[("visioncraft_images_generated_total", blocked)] == 1
    assert samples[("visioncraft_idempotency_replays_total", (("backend", "gemini"),))] == 1
    assert samples[("visioncraft_generation_failures_total", reused)] == 1
    assert samples[("visioncraft_generation_failures_total", violation)] == 1
    stage = (("backend", "gemini"), ("stage", "input"))
    assert samples[("visioncraft_safety_blocks_total", stage)] == 1
    assert samples[("visioncraft_upstream_cost_total", (("model", MODEL),))] == pytest.approx(0.08)
    not_found = {
        dict(labels)["http_route"]: value
        for (name, labels), value in samples.items()
        if name == "http_server_request_duration_seconds_count"
        and ("http_response_status_code", "404") in labels
    }
    assert not_found == {"/api/v1/images/{image_id}": 1, "": 2}


def test_json_metrics_match_prometheus_text(busy_client: TestClient) -> None:
    text = busy_client.get("/metrics").text
    payload = busy_client.get("/api/v1/monitoring/metrics").json()

    from_text = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if family.name.startswith(PRODUCT_PREFIXES)
    }
    from_json = {
        (sample["name"], tuple(sorted(sample["labels"].items()))): sample["value"]
        for family in payload["metrics"]
        for sample in family["samples"]
        if family["name"].startswith(PRODUCT_PREFIXES)
    }
    assert from_json == from_text
    assert len(from_text) > 20


@pytest.mark.parametrize("path", ["/metrics", "/api/v1/monitoring/metrics"])
def test_metrics_need_token_when_set(tmp_path: Path, path: str) -> None:
    settings = make_settings(tmp_path, metrics_token=METRICS_TOKEN)
    with TestClient(create_app(settings)) as client:
        missing = client.get(path)
        wrong = client.get(path, headers={"Authorization": "Bearer not-the-token"})
        right = client.get(path, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})

    assert missing.status_code == 401
    assert missing.json()["code"] == "invalid_metrics_token"
    assert wrong.status_code == 401
    assert right.status_code == 200


def test_metrics_and_probes_leave_no_http_series(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        client.get("/metrics")
        client.get("/api/v1/monitoring/liveness")
        text = client.get("/metrics").text

    assert 'http_route="/metrics"' not in text
    assert "/api/v1/monitoring/liveness" not in text
    assert "traceresponse" not in client.get("/metrics").headers
