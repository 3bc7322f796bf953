"""Checks of the Cloud Run manifests and the bucket lifecycle rule, read as YAML and JSON.

kubernetes-validate has no schema for Knative's or Cloud Run's kinds, so these tests check the
fields that matter and that the app accepts the environment they set.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy_compose import assert_otlp_protocol_fits_port

from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CLOUDRUN = ROOT / "deploy/cloudrun"
LIVENESS_PATH = "/api/v1/monitoring/liveness"
# Cloud Run sends SIGKILL this long after SIGTERM.
CLOUD_RUN_SHUTDOWN_BUDGET_S = 10
PLACEHOLDERS = {
    "${REGION}": "asia-northeast1",
    "${PROJECT_ID}": "visioncraft-test",
    "${CLOUDSQL_INSTANCE}": "main",
    "${IMAGE}": "asia-northeast1-docker.pkg.dev/visioncraft-test/visioncraft/visioncraft:1",
    "${PUBLIC_BASE_URL}": "https://visioncraft.example.com",
    "${GCS_BUCKET}": "visioncraft-images",
    "${NETWORK}": "default",
    "${SUBNET}": "default",
    "${SELLER_NAME}": "VisionCraft KK",
    "${SELLER_REPRESENTATIVE}": "Hanako Yamada",
    "${SELLER_ADDRESS}": "#1 Shibuya: Tokyo",  # a YAML comment sign and a colon, quoted
    "${SELLER_PHONE}": "+81-3-0000-0000",
    "${SELLER_EMAIL}": "support@visioncraft.example.com",
    "${SELLER_PRICES_NOTE}": "Prices: tax included.",
    "${SELLER_PAYMENT_METHODS}": "Credit card (Stripe)",
    "${SELLER_DELIVERY_TIMING}": "Credits are available at once after payment.",
    "${SELLER_RETURNS_POLICY}": "Unused credit packs can be refunded within 8 days.",
}
# Values for the variables that the manifests take from Secret Manager.
SECRET_VALUES = {
    "VISIONCRAFT_SECRET_KEY": "s" * 48,
    "VISIONCRAFT_DATABASE_URL": "postgresql+asyncpg://visioncraft:pw@/visioncraft?host=/cloudsql/x",
}


def load_manifest(name: str) -> dict[str, Any]:
    """Load a manifest with its placeholders filled in, as envsubst would."""
    text = (CLOUDRUN / name).read_text()
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    unfilled = re.findall(r"\$\{[A-Z_]+\}", text)
    assert unfilled == [], f"{name} has placeholders the tests do not fill: {unfilled}"
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def environment(container: dict[str, Any]) -> dict[str, str]:
    """Return the container's plain values, with the secret references filled by test values."""
    values = {}
    for variable in container["env"]:
        if "value" in variable:
            values[variable["name"]] = variable["value"]
        else:
            assert "secretKeyRef" in variable["valueFrom"], variable["name"]
            values[variable["name"]] = SECRET_VALUES.get(variable["name"], "secret")
    return values


def settings_from(values: dict[str, str], data_dir: Path) -> Settings:
    fields: dict[str, Any] = {
        name.removeprefix("VISIONCRAFT_").lower(): value
        for name, value in values.items()
        if name.startswith("VISIONCRAFT_")
    }
    return Settings(_env_file=None, data_dir=data_dir, **fields)


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    return load_manifest("service.yaml")


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    return load_manifest("migrate-job.yaml")


def containers_by_name(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        container["name"]: container
        for container in service["spec"]["template"]["spec"]["containers"]
    }


def test_service_is_knative_service(service: dict[str, Any]) -> None:
    assert service["apiVersion"] == "serving.knative.dev/v1"
    assert service["kind"] == "Service"
    assert set(containers_by_name(service)) == {"app", "otel-collector"}


def test_only_app_container_takes_traffic(service: dict[str, Any]) -> None:
    containers = containers_by_name(service)
    app = containers["app"]

    assert app["ports"] == [{"name": "http1", "containerPort": 8080}]
    assert "ports" not in containers["otel-collector"]
    assert environment(app)["VISIONCRAFT_PORT"] == "8080"
    assert app["args"] == ["serve", "--host", "0.0.0.0", "--port", "8080"]


def test_app_probes_use_liveness_route(service: dict[str, Any]) -> None:
    app = containers_by_name(service)["app"]

    for probe in ("startupProbe", "livenessProbe"):
        assert app[probe]["httpGet"] == {"path": LIVENESS_PATH, "port": 8080}, probe


def test_shutdown_fits_cloud_run_budget(service: dict[str, Any]) -> None:
    values = environment(containers_by_name(service)["app"])
    shutdown = [
        float(values[name])
        for name in (
            "VISIONCRAFT_SHUTDOWN_DRAIN_S",
            "VISIONCRAFT_SHUTDOWN_GRACE_S",
            "VISIONCRAFT_TELEMETRY_FLUSH_S",
        )
    ]

    assert shutdown == [0, 6, 2]
    assert sum(shutdown) < CLOUD_RUN_SHUTDOWN_BUDGET_S


def test_collector_sidecar_starts_first(service: dict[str, Any]) -> None:
    template = service["spec"]["template"]
    dependencies = json.loads(
        template["metadata"]["annotations"]["run.googleapis.com/container-dependencies"]
    )
    collector = containers_by_name(service)["otel-collector"]
    mount = collector["volumeMounts"][0]
    volumes = {volume["name"]: volume for volume in template["spec"]["volumes"]}

    assert dependencies == {"app": ["otel-collector"]}
    assert collector["startupProbe"]["httpGet"]["port"] == 13133
    assert mount["name"] in volumes
    assert volumes[mount["name"]]["secret"]["items"] == [{"key": "latest", "path": "config.yaml"}]
    assert collector["args"] == [f"--config={mount['mountPath']}/config.yaml"]
    assert environment(containers_by_name(service)["app"])["OTEL_EXPORTER_OTLP_ENDPOINT"] == (
        "http://localhost:4317"
    )
    assert_otlp_protocol_fits_port(environment(containers_by_name(service)["app"]))


def test_service_reaches_private_network(service: dict[str, Any]) -> None:
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    interfaces = json.loads(annotations["run.googleapis.com/network-interfaces"])

    assert interfaces == [{"network": "default", "subnetwork": "default"}]
    assert annotations["run.googleapis.com/vpc-access-egress"] == "private-ranges-only"


def test_request_timeout_is_below_cloud_run_timeout(
    service: dict[str, Any], tmp_path: Path
) -> None:
    settings = settings_from(environment(containers_by_name(service)["app"]), tmp_path)

    assert service["spec"]["template"]["spec"]["timeoutSeconds"] > settings.request_timeout_s


def test_service_environment_is_accepted_in_production(
    service: dict[str, Any], tmp_path: Path
) -> None:
    settings = settings_from(environment(containers_by_name(service)["app"]), tmp_path)

    assert settings.is_production
    assert settings.image_store == "gcs"
    assert settings.gcs_bucket == "visioncraft-images"


def test_migrate_job_runs_same_image(
    service: dict[str, Any], job: dict[str, Any], tmp_path: Path
) -> None:
    task = job["spec"]["template"]["spec"]["template"]["spec"]
    (container,) = task["containers"]
    app = containers_by_name(service)["app"]

    assert job["apiVersion"] == "run.googleapis.com/v1"
    assert job["kind"] == "Job"
    assert container["args"] == ["migrate"]
    assert container["image"] == app["image"]
    assert settings_from(environment(container), tmp_path).is_production
    assert (
        job["spec"]["template"]["metadata"]["annotations"]["run.googleapis.com/cloudsql-instances"]
        == service["spec"]["template"]["metadata"]["annotations"][
            "run.googleapis.com/cloudsql-instances"
        ]
    )


def test_manifests_take_secrets_from_secret_manager(
    service: dict[str, Any], job: dict[str, Any]
) -> None:
    task = job["spec"]["template"]["spec"]["template"]["spec"]
    for container in [containers_by_name(service)["app"], *task["containers"]]:
        for variable in container["env"]:
            if re.search(r"SECRET|DATABASE_URL|TOKEN|API_KEY|REDIS_URL", variable["name"]):
                assert "value" not in variable, f"{variable['name']} must come from Secret Manager"


def test_bucket_lifecycle_outlasts_retention(tmp_path: Path) -> None:
    lifecycle = json.loads((ROOT / "deploy/gcs/lifecycle.json").read_text())
    (rule,) = lifecycle["rule"]
    retention_days = Settings(_env_file=None, data_dir=tmp_path).image_retention_days  # type: ignore[call-arg]

    assert rule["action"] == {"type": "Delete"}
    assert rule["condition"]["age"] == retention_days + 1


@pytest.mark.parametrize("readme", ["README.md", "README.ja.md"])
def test_readme_exports_every_placeholder(readme: str) -> None:
    text = (CLOUDRUN.parents[1] / readme).read_text()
    exported = set(re.findall(r"\b([A-Z_]+)=", " ".join(re.findall(r"export (.*)", text))))
    placeholders = {
        name
        for manifest in ("service.yaml", "migrate-job.yaml")
        for name in re.findall(r"\$\{([A-Z_]+)\}", (CLOUDRUN / manifest).read_text())
    }

    assert placeholders - exported == set()
