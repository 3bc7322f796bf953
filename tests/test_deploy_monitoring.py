"""Checks of the collector configurations and of Prometheus's configuration, rules and rule tests."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from conftest import make_settings, require_tool
from monitoring_support import DASHBOARD, alert_rules, dashboard_panels, selectors

from app.main import create_app
from telemetry.health import HealthChecker

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR_FILES = [ROOT / "otel-collector.yaml", ROOT / "deploy/otel-collector.gcp.yaml"]
PROMETHEUS_ROOT = ROOT / "deploy/prometheus"
PROMTOOL_INSTALL = "apt-get install -y --no-install-recommends prometheus"
COMPONENT_KINDS = ("receivers", "processors", "exporters")
# Exporters that would put the app's metrics into a Prometheus that already scrapes /metrics.
PROMETHEUS_EXPORTERS = {"prometheus", "prometheusremotewrite"}


def load_yaml(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def component_type(component_id: str) -> str:
    """Return the type of a component id such as `otlp/jaeger` (the part before the slash)."""
    return component_id.split("/", 1)[0]


@pytest.mark.parametrize("path", COLLECTOR_FILES, ids=lambda path: path.name)
def test_collector_pipelines_use_defined_components(path: Path) -> None:
    config = load_yaml(path)
    pipelines = config["service"]["pipelines"]

    for kind in COMPONENT_KINDS:
        defined = set(config.get(kind) or {})
        used = {
            component for pipeline in pipelines.values() for component in pipeline.get(kind, [])
        }
        assert used <= defined, f"{path.name}: {kind} {sorted(used - defined)} are not defined"
        assert defined <= used, f"{path.name}: {kind} {sorted(defined - used)} are never used"
    extensions = set(config.get("extensions") or {})
    assert set(config["service"]["extensions"]) == extensions


@pytest.mark.parametrize("path", COLLECTOR_FILES, ids=lambda path: path.name)
def test_collector_has_required_parts(path: Path) -> None:
    config = load_yaml(path)
    pipelines = config["service"]["pipelines"]

    assert set(pipelines) == {"traces", "metrics", "logs"}
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert "health_check" in config["service"]["extensions"]
    for name, pipeline in pipelines.items():
        assert pipeline["receivers"] == ["otlp"], name
        assert pipeline["processors"][0] == "memory_limiter", f"{name}: memory_limiter goes first"
        assert pipeline["processors"][-1] == "batch", f"{name}: batch goes last"


def test_collector_sends_traces_to_jaeger() -> None:
    config = load_yaml(ROOT / "otel-collector.yaml")
    exporters = config["service"]["pipelines"]["traces"]["exporters"]

    assert exporters == ["otlp/jaeger"]
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"


def test_gcp_collector_exports_to_google_cloud() -> None:
    config = load_yaml(ROOT / "deploy/otel-collector.gcp.yaml")

    for pipeline in config["service"]["pipelines"].values():
        assert pipeline["exporters"] == ["googlecloud"]


@pytest.mark.parametrize("path", COLLECTOR_FILES, ids=lambda path: path.name)
def test_collector_never_exports_metrics_to_prometheus(path: Path) -> None:
    config = load_yaml(path)
    exporter_types = {component_type(exporter) for exporter in config["exporters"]}

    assert exporter_types.isdisjoint(PROMETHEUS_EXPORTERS)


def test_prometheus_scrapes_collector_telemetry_port() -> None:
    collector = load_yaml(ROOT / "otel-collector.yaml")
    prometheus = load_yaml(PROMETHEUS_ROOT / "prometheus.yml")
    reader = collector["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
    job = next(job for job in prometheus["scrape_configs"] if job["job_name"] == "otel-collector")

    assert job["static_configs"][0]["targets"] == [f"otel-collector:{reader['prometheus']['port']}"]


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool", PROMTOOL_INSTALL)
    config = load_yaml(PROMETHEUS_ROOT / "prometheus.yml")
    # Point the container paths at this checkout, because promtool opens every file it names.
    token_file = tmp_path / "metrics_token"
    token_file.write_text("token")
    config["rule_files"] = [str(PROMETHEUS_ROOT / "rules/*.yml")]
    for job in config["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token_file)
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))

    result = subprocess.run(
        [promtool, "check", "config", str(checked)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    rule_files = len(list((PROMETHEUS_ROOT / "rules").glob("*.yml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {rule_files} rule files found" in result.stdout + result.stderr


def test_alert_rules_pass_their_tests() -> None:
    promtool = require_tool("promtool", PROMTOOL_INSTALL)
    test_files = sorted((PROMETHEUS_ROOT / "tests").glob("*_test.yml"))

    result = subprocess.run(
        [promtool, "test", "rules", *map(str, test_files)],
        cwd=PROMETHEUS_ROOT / "tests",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert test_files
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_rule_test() -> None:
    alerts = {rule["alert"] for _, rule in alert_rules()}
    cases = [
        case
        for path in (PROMETHEUS_ROOT / "tests").glob("*_test.yml")
        for test in load_yaml(path)["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}

    assert alerts
    assert alerts <= firing, f"alerts without a firing test: {sorted(alerts - firing)}"
    assert alerts <= silent, (
        f"alerts without a test where they stay silent: {sorted(alerts - silent)}"
    )


def test_readiness_alert_matches_critical_checks(tmp_path: Path) -> None:
    checker: HealthChecker = create_app(make_settings(tmp_path)).state.health
    rules = {rule["alert"]: rule for _, rule in alert_rules()}
    not_ready = _check_matcher(rules["VisionCraftNotReady"]["expr"])
    degraded = _check_matcher(rules["VisionCraftHealthCheckFailing"]["expr"])
    critical = {check.key for check in checker.checks if check.critical}
    others = {check.key for check in checker.checks if not check.critical} | {"redis:responseTime"}

    assert critical == {"database:responseTime", "imageStore:responseTime"}
    assert not_ready.op == promql_parser.MatchOp.Re
    assert degraded.op == promql_parser.MatchOp.NotRe
    assert not_ready.value == degraded.value
    pattern = re.compile(f"^(?:{not_ready.value})$")
    assert {key for key in critical | others if pattern.match(key)} == critical


def _check_matcher(expr: str) -> promql_parser.Matcher:
    (selector,) = selectors(expr)
    (matcher,) = [matcher for matcher in selector.matchers.matchers if matcher.name == "check"]
    return matcher


def test_every_alert_explains_itself() -> None:
    for _, rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert re.search(r"\w", rule["annotations"]["description"]), rule["alert"]


def test_dashboard_panels_fill_grid_once() -> None:
    panels = dashboard_panels(DASHBOARD)
    cells: dict[tuple[int, int], str] = {}
    overlaps = []
    for panel in panels:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                if (x, y) in cells:
                    overlaps.append(f"{panel['title']} over {cells[(x, y)]}")
                cells[(x, y)] = panel["title"]

    assert len({panel["id"] for panel in panels}) == len(panels)
    assert all(panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24 for panel in panels)
    assert overlaps == []
