"""Checks of the collector configurations and of Prometheus's configuration, rules and rule tests."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import require_tool

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

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


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
    alerts = {
        rule["alert"]
        for path in (PROMETHEUS_ROOT / "rules").glob("*.yml")
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tested = {
        case["alertname"]
        for path in (PROMETHEUS_ROOT / "tests").glob("*_test.yml")
        for test in load_yaml(path)["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }

    assert alerts
    assert alerts <= tested, f"alerts without a firing test: {sorted(alerts - tested)}"


def test_every_alert_explains_itself() -> None:
    for path in (PROMETHEUS_ROOT / "rules").glob("*.yml"):
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
                assert rule["annotations"]["summary"], rule["alert"]
                assert re.search(r"\w", rule["annotations"]["description"]), rule["alert"]
