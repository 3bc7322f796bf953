"""The dashboard's and the alert rules' queries against the running service and a real Prometheus.

One app serves the module: a real uvicorn on 127.0.0.1 with the gemini backend on the fake
Gemini API, billing on the fake Stripe API, and an OTLP endpoint where nothing listens, so that
exports fail. The first test checks every selector of every query against the app's /metrics.
The others run Debian's Prometheus with deploy/prometheus/prometheus.yml and the alert rules.
Their targets point at 127.0.0.1, they scrape and evaluate every second, and no rule waits (`for`
is 0s). Then they check that the dashboard's queries return data and that forced failures fire
their alerts.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from billing_support import billing_settings
from conftest import LiveServer, free_port, require_program
from monitoring_support import (
    PrometheusServer,
    Query,
    StackTraffic,
    dashboard_queries,
    exact_matchers,
    regex_matchers,
    rule_queries,
    selector_name,
    selectors,
    stack_settings,
)
from prometheus_client.parser import text_string_to_metric_families

from fakes.gemini_api import TEST_API_KEY, FakeGeminiAPI
from fakes.stripe_api import FakeStripeAPI

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
METRICS_TOKEN = "stack-metrics-token-for-tests-3e7a"
# Labels that Prometheus adds to every scraped series.
SCRAPE_LABELS = frozenset({"job", "instance"})
# Series that Prometheus makes itself for each target.
SCRAPE_SERIES = frozenset({"up"})
# The window that replaces Grafana's interval variables: a few scrapes at one per second.
RATE_WINDOW = "30s"
# The window that replaces $__range: longer than the test.
TIME_RANGE = "1h"
ALERT_WAIT_S = 20.0
# How long the exported series may take to appear after the traffic.
SERIES_WAIT_S = 15.0
# Rate-limited generations sent to force the alert: at least the 3 that it needs.
RATE_LIMITED_BURST = 4


@dataclass
class Stack:
    server: LiveServer
    client: httpx.Client
    traffic: StackTraffic
    prometheus: PrometheusServer

    @property
    def data_dir(self) -> Path:
        return self.server.settings.data_dir


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The app after one round of traffic, and a Prometheus that scrapes it every second.

    Prometheus starts first, because it takes the longest to report its first scrape.
    """
    binary = require_program("prometheus", "prometheus")
    folder = tmp_path_factory.mktemp("stack")
    with (
        FakeGeminiAPI() as gemini,
        FakeStripeAPI() as stripe,
        pytest.MonkeyPatch.context() as monkeypatch,
    ):
        monkeypatch.setenv("GOOGLE_API_KEY", TEST_API_KEY)
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini.base_url)
        _export_to_nowhere(monkeypatch)
        settings = billing_settings(
            folder / "data",
            stripe,
            **stack_settings(billing_settings(folder / "data", stripe)),
            port=free_port(),
            metrics_token=METRICS_TOKEN,
            health_cache_s=0.5,
        )
        prometheus_port = free_port()
        config = write_prometheus_config(folder, app_port=settings.port, own_port=prometheus_port)
        with (
            PrometheusServer(binary, config, folder, prometheus_port) as prometheus,
            LiveServer(settings) as server,
            httpx.Client(base_url=server.base_url, timeout=30) as client,
        ):
            traffic = StackTraffic(client, settings, gemini, stripe)
            traffic.send_round()
            yield Stack(server, client, traffic, prometheus)
        assert gemini.handler_errors == []
        assert stripe.handler_errors == []


@pytest.fixture(scope="module")
def scraped_stack(stack: Stack) -> Stack:
    """The stack after a second round of traffic that Prometheus has scraped.

    Counters that first appear in a scrape have no increase yet, so rates need a round of
    traffic after the first scrape.
    """
    prometheus = stack.prometheus
    up = prometheus.wait_for('up{job="visioncraft"} == 1')
    assert up, f"Prometheus never scraped the app:\n{prometheus.log_tail()}"
    stack.traffic.send_round()
    second_round = prometheus.wait_for(
        'sum(increase(visioncraft_billing_revenue_total{job="visioncraft"}[1m])) > 0'
    )
    assert second_round, f"the second round never reached Prometheus:\n{prometheus.log_tail()}"
    return stack


def _export_to_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Export spans to a port where nothing listens, so that each export fails within 1 s."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")


def write_prometheus_config(folder: Path, *, app_port: int, own_port: int) -> Path:
    """Write the deploy config with its targets on 127.0.0.1 and rules that fire at once.

    The collector's target gets a port where nothing listens, since no collector runs here.
    Return the path of the config.
    """
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    targets = {
        "app:8000": f"127.0.0.1:{app_port}",
        "otel-collector:8888": f"127.0.0.1:{free_port()}",
        "localhost:9090": f"127.0.0.1:{own_port}",
    }
    token = folder / "metrics_token"
    token.write_text(METRICS_TOKEN)
    for job in config["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token)
        for static in job["static_configs"]:
            unknown = set(static["targets"]) - set(targets)
            assert not unknown, f"job {job['job_name']}: no test address for {sorted(unknown)}"
            static["targets"] = [targets[target] for target in static["targets"]]
    config["rule_files"] = [str(write_immediate_rules(folder / "rules") / "*.yml")]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_immediate_rules(folder: Path) -> Path:
    """Copy the alert rules into `folder` with `for: 0s`, so that a true alert fires at once."""
    folder.mkdir()
    for path in sorted((ROOT / "deploy/prometheus/rules").glob("*.yml")):
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                rule["for"] = "0s"
        (folder / path.name).write_text(yaml.safe_dump(rules))
    return folder


def exported_series(text: str) -> dict[str, list[dict[str, str]]]:
    """Return the label sets of every sample in a /metrics text, by sample name."""
    series: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, []).append(sample.labels)
    return series


def selector_problems(query: Query, series: dict[str, list[dict[str, str]]]) -> list[str]:
    """Return what the query selects that /metrics does not have: names, labels, values."""
    problems = []
    for selector in selectors(query.with_range(RATE_WINDOW, TIME_RANGE)):
        name = selector_name(selector)
        if name in SCRAPE_SERIES:
            continue
        samples = series.get(name)
        if not samples:
            problems.append(f"{query.source}: no series {name}")
            continue
        for label, value in exact_matchers(selector).items():
            if label not in SCRAPE_LABELS and not any(s.get(label) == value for s in samples):
                problems.append(f'{query.source}: no {name}{{{label}="{value}"}}')
        for label, pattern in regex_matchers(selector).items():
            if label not in SCRAPE_LABELS and not any(
                pattern.match(s.get(label, "")) for s in samples
            ):
                problems.append(f'{query.source}: no {name}{{{label}=~"{pattern.pattern}"}}')
    return problems


def test_queries_use_exported_series(stack: Stack) -> None:
    queries = dashboard_queries() + rule_queries()
    # Some series appear a moment after the traffic: the export failure counter, for one,
    # only once the first export to the closed port has timed out.
    deadline = time.monotonic() + SERIES_WAIT_S
    while True:
        headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        series = exported_series(stack.client.get("/metrics", headers=headers).text)
        problems = [problem for query in queries for problem in selector_problems(query, series)]
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    assert len(queries) > 40
    assert problems == []


def test_dashboard_queries_return_data(scraped_stack: Stack) -> None:
    prometheus = scraped_stack.prometheus
    results = {
        query.source: prometheus.query(query.with_range(RATE_WINDOW, TIME_RANGE))
        for query in dashboard_queries()
    }

    empty = [source for source, result in results.items() if not result]
    without_number = [
        source
        for source, result in results.items()
        if result and not any(math.isfinite(float(sample["value"][1])) for sample in result)
    ]
    assert empty == []
    assert without_number == []
    assert _values(results, "panel 'Requests per second' target A")[0] > 0
    assert _values(results, "panel 'Revenue in the time range' target A")[0] > 0


def test_alert_rules_evaluate_without_errors(scraped_stack: Stack) -> None:
    groups = scraped_stack.prometheus.get("/api/v1/rules")["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}

    failing = {name: rule["lastError"] for name, rule in rules.items() if rule["health"] != "ok"}
    assert set(rules) == {query.source.removeprefix("alert ") for query in rule_queries()}
    assert failing == {}


def test_forced_failures_fire_alerts(scraped_stack: Stack) -> None:
    prometheus = scraped_stack.prometheus
    # The image store check writes under health/; a file in its place makes it fail.
    health_folder = scraped_stack.data_dir / "images" / "health"
    expected = {"VisionCraftNotReady", "VisionCraftBackendRateLimited"}
    before = prometheus.firing_alerts()
    _replace_with_file(health_folder)
    scraped_stack.traffic.send_rate_limited(RATE_LIMITED_BURST)

    deadline = time.monotonic() + ALERT_WAIT_S
    firing = prometheus.firing_alerts()
    while not expected <= set(firing) and time.monotonic() < deadline:
        time.sleep(0.25)
        firing = prometheus.firing_alerts()

    assert expected.isdisjoint(before), f"firing before the failures: {sorted(before)}"
    assert expected <= set(firing), f"firing: {sorted(firing)}\n{prometheus.log_tail()}"
    assert [labels["check"] for labels in firing["VisionCraftNotReady"]] == [
        "imageStore:responseTime"
    ]
    assert firing["VisionCraftNotReady"][0]["severity"] == "critical"
    assert "VisionCraftDown" not in firing


def _replace_with_file(folder: Path) -> None:
    """Put an empty file where `folder` is. A health check running in the background may make
    the folder again between the removal and the write, so try again until the file is there."""
    deadline = time.monotonic() + 10
    while True:
        shutil.rmtree(folder, ignore_errors=True)
        try:
            folder.write_bytes(b"")
            return
        except IsADirectoryError:
            if time.monotonic() > deadline:
                raise


def _values(results: dict[str, list[dict[str, Any]]], source: str) -> list[float]:
    return [float(sample["value"][1]) for sample in results[source]]
