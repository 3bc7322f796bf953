"""The Kubernetes manifests: schema-valid offline, probes on the health routes, a shutdown
budget below the grace period, locked-down pods, and settings that production accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import require_tool
from test_deploy_compose import assert_otlp_protocol_fits_port

from app.settings import SELLER_SETTINGS, Environment, ImageStoreName, Settings

KUBERNETES_DIR = Path(__file__).parent.parent / "deploy" / "kubernetes"
LIVENESS_PATH = "/api/v1/monitoring/liveness"
READINESS_PATH = "/api/v1/monitoring/readiness"
# Kinds whose schemas are not part of Kubernetes, so the validator only warns about them.
UNVALIDATED_FILES = {"kustomization.yaml", "servicemonitor.yaml"}
SECRET_VALUES = {
    "secret-key": "k8s-test-secret-" + "y" * 32,
    "database-url": "postgresql+asyncpg://visioncraft:password@postgres/visioncraft",
    "metrics-token": "metrics-token-for-tests",
    "redis-url": "redis://redis:6379/0",
    "gemini-api-key": "gemini-key-for-tests",
}


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((KUBERNETES_DIR / name).read_text())
    return document


def manifest_files() -> list[Path]:
    return sorted(KUBERNETES_DIR.glob("*.yaml"))


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def run_validator(*files: Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("kubernetes-validate", "pip install kubernetes-validate")
    return subprocess.run(
        [tool, "--strict", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_manifests_pass_strict_validation() -> None:
    result = run_validator(*manifest_files())

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for path in manifest_files():
        if path.name in UNVALIDATED_FILES:
            continue
        assert any(line.startswith(f"INFO {path} passed") for line in lines), path.name
    warned = {line.split()[1] for line in lines if line.startswith("WARN")}
    assert {Path(name).name for name in warned} == UNVALIDATED_FILES


def test_strict_validation_rejects_unknown_fields(tmp_path: Path) -> None:
    manifest = load("deployment.yaml")
    container(manifest)["livenessProbe"]["periodSecond"] = 10
    broken = tmp_path / "deployment.yaml"
    broken.write_text(yaml.safe_dump(manifest))

    result = run_validator(broken)

    assert result.returncode != 0
    assert "periodSecond" in result.stdout + result.stderr


def test_kustomization_lists_every_manifest() -> None:
    resources = load("kustomization.yaml")["resources"]

    assert sorted(resources) == sorted(
        path.name for path in manifest_files() if path.name != "kustomization.yaml"
    )


def test_kustomize_renders_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is missing; the other tests read the manifests without it")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    kinds = sorted(document["kind"] for document in yaml.safe_load_all(result.stdout))
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Job",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]


def test_probes_use_the_health_routes() -> None:
    app = container(load("deployment.yaml"))

    for probe in ("startupProbe", "livenessProbe"):
        assert app[probe]["httpGet"] == {"path": LIVENESS_PATH, "port": "http"}
    assert app["readinessProbe"]["httpGet"] == {"path": READINESS_PATH, "port": "http"}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert app[probe]["timeoutSeconds"] == 1
    # Liveness must never fail before readiness does.
    liveness, readiness = app["livenessProbe"], app["readinessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > (
        readiness["periodSeconds"] * readiness["failureThreshold"]
    )


def test_grace_period_exceeds_shutdown_budget() -> None:
    settings = load("configmap.yaml")["data"]
    pod = load("deployment.yaml")["spec"]["template"]["spec"]

    budget_s = sum(
        float(settings[f"VISIONCRAFT_{name}"])
        for name in ("SHUTDOWN_DRAIN_S", "SHUTDOWN_GRACE_S", "TELEMETRY_FLUSH_S")
    )

    assert budget_s == 28
    assert pod["terminationGracePeriodSeconds"] >= budget_s + 5


@pytest.mark.parametrize("name", ["deployment.yaml", "migrate-job.yaml"])
def test_pods_run_locked_down(name: str) -> None:
    manifest = load(name)
    pod = manifest["spec"]["template"]["spec"]
    main = container(manifest)

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    assert main["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {mount["mountPath"]: mount["name"] for mount in main["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for path in ("/tmp", "/data"):  # noqa: S108 - mount paths in a manifest, not files
        assert "emptyDir" in volumes[mounts[path]]
    assert {"requests", "limits"} <= set(main["resources"])


def test_migration_job_runs_migrate() -> None:
    job = load("migrate-job.yaml")
    app = container(load("deployment.yaml"))
    migrate = container(job)

    assert migrate["args"] == ["migrate"]
    assert migrate["image"] == app["image"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert migrate["envFrom"] == app["envFrom"]


def test_service_and_monitor_reach_the_pods() -> None:
    deployment = load("deployment.yaml")
    service = load("service.yaml")
    monitor = load("servicemonitor.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    app = container(deployment)
    token_variable = next(
        variable for variable in app["env"] if variable["name"] == "VISIONCRAFT_METRICS_TOKEN"
    )

    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == app["ports"][0]["name"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == (service["spec"]["ports"][0]["name"], "/metrics")
    assert endpoint["authorization"]["credentials"] == token_variable["valueFrom"]["secretKeyRef"]


def pod_environment(overrides: dict[str, str]) -> dict[str, str]:
    """The variables a pod gets: the ConfigMap, `overrides`, and test values for the Secret.

    Optional Secret keys (the Stripe ones) are left out, as in a Secret that lacks them.
    """
    environment = {**load("configmap.yaml")["data"], **overrides}
    for variable in container(load("deployment.yaml"))["env"]:
        reference = variable.get("valueFrom", {}).get("secretKeyRef")
        if reference is not None and not reference.get("optional", False):
            environment[variable["name"]] = SECRET_VALUES[reference["key"]]
    return environment


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_filled_in_config_is_accepted_by_production(monkeypatch: pytest.MonkeyPatch) -> None:
    filled = {f"VISIONCRAFT_{name.upper()}": f"{name} of the seller" for name in SELLER_SETTINGS}
    filled["VISIONCRAFT_GCS_BUCKET"] = "visioncraft-images"

    settings = settings_from(pod_environment(filled), monkeypatch)
    settings.check_seller_details()

    assert settings.environment is Environment.PRODUCTION
    assert settings.image_store is ImageStoreName.GCS
    assert settings.shutdown_drain_s + settings.shutdown_grace_s + settings.telemetry_flush_s == 28


def test_config_as_shipped_names_what_to_fill_in(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = pod_environment({"VISIONCRAFT_GCS_BUCKET": "visioncraft-images"})

    with pytest.raises(ValueError, match="VISIONCRAFT_SELLER_NAME") as raised:
        settings_from(environment, monkeypatch).check_seller_details()

    assert "VISIONCRAFT_SELLER_RETURNS_POLICY" in str(raised.value)


def test_pods_speak_the_collector_ports_protocol() -> None:
    assert_otlp_protocol_fits_port(pod_environment({}))
