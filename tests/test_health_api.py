"""The probes and the health report: statuses, failing checks, start-up, drain and probe storms."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    TEST_BUCKET,
    LiveServer,
    bearer,
    create_key,
    free_port,
    make_settings,
    unique_redis_prefix,
)
from fastapi.testclient import TestClient
from sqlalchemy import event

from app.main import create_app
from app.settings import SELLER_SETTINGS
from app.storage.database import upgrade_database
from fakes.gcs_api import FakeCloudStorage
from fakes.gemini_api import TEST_API_KEY, FakeGeminiAPI, rate_limited
from telemetry.health import CheckOutcome, HealthChecker, HealthStatus

LIVENESS = "/api/v1/monitoring/liveness"
READINESS = "/api/v1/monitoring/readiness"
HEALTH = "/api/v1/monitoring/health"
HEALTH_MEDIA_TYPE = "application/health+json"
STATUSES = {"pass", "warn", "fail"}
COMPONENT_TYPES = {"component", "datastore", "system"}
APP_CHECKS = {
    "database:responseTime",
    "imageStore:responseTime",
    "imageBackend:lastCall",
    "telemetryExport:lastExport",
    "disk:freeSpace",
    "memory:utilization",
    "billing:lastWebhook",
}
# How long a test waits for a response that must come at once, to prove nothing hangs.
ANSWER_MARGIN_S = 2.0


def assert_health_document(document: dict[str, Any], *, detailed: bool) -> None:
    """Check the documented shape: the IETF draft's fields, and details only when `detailed`."""
    assert document["status"] in STATUSES
    for key, entries in document["checks"].items():
        assert isinstance(key, str) and key
        assert isinstance(entries, list) and len(entries) == 1
        entry = entries[0]
        assert entry["status"] in STATUSES
        if not detailed:
            assert set(entry) == {"status"}, key
            continue
        assert entry["componentType"] in COMPONENT_TYPES
        assert "observedValue" in entry
        assert "observedUnit" in entry
        assert datetime.fromisoformat(entry["time"]).tzinfo is not None
        if entry["status"] != "pass":
            assert isinstance(entry["output"], str) and entry["output"], key
    detail_fields = {"version", "releaseId", "serviceId", "description", "system"}
    if detailed:
        assert detail_fields <= set(document)
        assert {"python", "platform", "cpu", "memory", "disk", "process"} <= set(document["system"])
        assert document["checks"]["uptime"][0]["observedUnit"] == "s"
    else:
        assert not detail_fields & set(document)


def admin_key(settings: Any) -> dict[str, str]:
    return bearer(create_key(settings, scopes=["admin", "images:generate"]))


def test_liveness_answers_pass(client: TestClient) -> None:
    response = client.get(LIVENESS)

    assert response.status_code == 200
    assert response.headers["content-type"] == HEALTH_MEDIA_TYPE
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {"status": "pass"}
    # Handled ahead of the router, the probes still carry what every response carries.
    assert response.headers["x-request-id"].startswith("req_")
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/api/v1/monitoring/liveness", "/api/v1/monitoring/readiness"])
def test_probe_paths_route_other_methods_as_usual(client: TestClient, path: str) -> None:
    # GET and HEAD are handled ahead of the middleware, and other methods reach the router.
    head = client.head(path)
    response = client.post(path)

    assert head.status_code == 200
    assert head.content == b""
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_readiness_passes_with_healthy_checks(client: TestClient) -> None:
    response = client.get(READINESS)

    assert response.status_code == 200
    assert response.json() == {"status": "pass"}


def test_health_shows_statuses_to_anonymous_callers(client: TestClient) -> None:
    response = client.get(HEALTH)

    assert response.status_code == 200
    assert response.headers["content-type"] == HEALTH_MEDIA_TYPE
    document = response.json()
    assert_health_document(document, detailed=False)
    assert set(document["checks"]) == APP_CHECKS
    # Billing is off without Stripe settings: a warning, which still answers 200.
    assert document["status"] == "warn"
    assert document["checks"]["billing:lastWebhook"][0]["status"] == "warn"
    assert document["checks"]["database:responseTime"][0]["status"] == "pass"


def test_health_shows_details_to_admins(client: TestClient, settings: Any) -> None:
    document = client.get(HEALTH, headers=admin_key(settings)).json()

    assert_health_document(document, detailed=True)
    assert document["releaseId"]
    assert document["version"] == "1"
    database = document["checks"]["database:responseTime"][0]
    assert database["componentId"] == "sqlite"
    assert database["observedUnit"] == "ms"
    assert database["critical"] is True
    assert document["checks"]["imageStore:responseTime"][0]["componentId"] == "local"


def test_health_keeps_details_from_keys_without_admin_scope(
    client: TestClient, settings: Any
) -> None:
    response = client.get(HEALTH, headers=bearer(create_key(settings)))

    assert response.status_code == 200
    assert_health_document(response.json(), detailed=False)
    assert "admin scope" in response.json()["notes"][-1]


def test_health_rejects_a_bad_key(client: TestClient) -> None:
    response = client.get(HEALTH, headers=bearer("vc_live_not_a_key"))

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_health_warns_without_failing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, health_disk_free_warn_mb=1e12)
    with TestClient(create_app(settings)) as client:
        response = client.get(HEALTH)
        readiness = client.get(READINESS)

    assert response.status_code == 200
    assert response.json()["status"] == "warn"
    assert response.json()["checks"]["disk:freeSpace"] == [{"status": "warn"}]
    assert readiness.status_code == 200


def test_raising_check_fails_with_message_in_valid_report(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    app = create_app(settings)

    async def broken() -> None:
        raise RuntimeError("the billing provider answered 401")

    checker: HealthChecker = app.state.health
    checker.register("billing", broken, critical=False)
    with TestClient(app) as client:
        anonymous = client.get(HEALTH)
        detailed = client.get(HEALTH, headers=admin_key(settings))

    assert anonymous.status_code == 200
    assert_health_document(anonymous.json(), detailed=False)
    assert anonymous.json()["checks"]["billing:responseTime"] == [{"status": "fail"}]
    document = detailed.json()
    assert_health_document(document, detailed=True)
    assert document["status"] == "warn"
    billing = document["checks"]["billing:responseTime"][0]
    assert billing["status"] == "fail"
    assert billing["output"] == "the billing provider answered 401"


def test_hanging_check_fails_readiness_not_liveness(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, port=free_port(), health_cache_s=0.1)
    server = LiveServer(settings)
    stuck = asyncio.Event()
    check_timeout_s = 0.3

    async def queue() -> None:
        # Passes until the test makes it hang forever, as a dependency that stops responding.
        if stuck.is_set():
            await asyncio.Event().wait()

    server.app.state.health.register("queue", queue, timeout_s=check_timeout_s)
    bound_s = check_timeout_s + ANSWER_MARGIN_S
    with server, httpx.Client(base_url=server.base_url, timeout=bound_s) as client:
        assert client.get(READINESS).status_code == 200
        stuck.set()
        deadline = time.monotonic() + 10
        readiness = client.get(READINESS)
        while readiness.status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
            readiness = client.get(READINESS)
        liveness = client.get(LIVENESS)
        health = client.get(HEALTH)

    assert readiness.status_code == 503
    assert readiness.json()["failing"] == ["queue"]
    assert readiness.json()["output"] == "critical checks fail: queue"
    assert liveness.status_code == 200
    assert health.status_code == 503
    assert health.json()["checks"]["queue:responseTime"] == [{"status": "fail"}]


def test_scrapes_refresh_health_status_gauge(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, health_cache_s=0.05)
    failing = 'visioncraft_health_check_status{check="imageStore:responseTime",status="fail"} 1.0'
    with TestClient(create_app(settings)) as client:
        before = client.get("/metrics").text
        # The image store check writes under health/; a file in that place makes it fail.
        health_folder = settings.data_dir / "images" / "health"
        shutil.rmtree(health_folder, ignore_errors=True)
        health_folder.write_bytes(b"")
        deadline = time.monotonic() + 10
        after = client.get("/metrics").text
        # No probe runs here: only the scrapes start new runs of the checks.
        while failing not in after and time.monotonic() < deadline:
            time.sleep(0.05)
            after = client.get("/metrics").text

    assert failing not in before
    assert failing in after


def test_probe_storm_makes_one_database_round_trip(database_url: str, tmp_path: Path) -> None:
    cache_s = 1.0
    settings = make_settings(
        tmp_path, port=free_port(), database_url=database_url, health_cache_s=cache_s
    )
    server = LiveServer(settings)
    round_trips: list[float] = []

    def count(*_arguments: Any) -> None:
        round_trips.append(time.monotonic())

    health_engine = server.app.state.services.health_engine
    event.listen(health_engine.sync_engine, "before_cursor_execute", count)

    async def storm() -> list[int]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            responses = await asyncio.gather(*(client.get(READINESS) for _ in range(200)))
        return [response.status_code for response in responses]

    with server:
        time.sleep(cache_s + 0.1)  # the report from start-up is stale now
        round_trips.clear()
        started = time.monotonic()
        statuses = asyncio.run(storm())
        elapsed_s = time.monotonic() - started
        time.sleep(0.2)  # let the refresh that the storm started finish

    assert statuses == [200] * 200
    assert 1 <= len(round_trips) <= 1 + int(elapsed_s // cache_s)


def test_probes_stay_out_of_access_log_and_metrics(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="visioncraft.access")

    for path in (LIVENESS, READINESS, HEALTH):
        client.get(path)
    logged = [
        record.getMessage() for record in caplog.records if record.name == "visioncraft.access"
    ]
    metrics = client.get("/metrics").text

    assert logged == [f"GET {HEALTH} 200 " + logged[0].rsplit(" ", 1)[1]]
    assert READINESS not in metrics
    assert LIVENESS not in metrics
    assert f'http_route="{HEALTH}"' in metrics


def test_draining_fails_readiness_but_serves(client: TestClient) -> None:
    client.app.state.lifecycle.start_draining()  # type: ignore[attr-defined]

    readiness = client.get(READINESS)

    assert readiness.status_code == 503
    assert readiness.json() == {
        "status": "fail",
        "output": "draining: the process is shutting down",
        "failing": [],
    }
    assert client.get(LIVENESS).status_code == 200
    assert client.get("/api/v1/plans").status_code == 200


def test_redis_is_checked_when_configured(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url=redis_url, redis_key_prefix=unique_redis_prefix())
    with TestClient(create_app(settings)) as client:
        document = client.get(HEALTH, headers=admin_key(settings)).json()

    redis = document["checks"]["redis:responseTime"][0]
    assert redis["status"] == "pass"
    assert redis["critical"] is False


def production_settings(tmp_path: Path, database_url: str) -> Any:
    sellers = {name: f"{name} for tests" for name in SELLER_SETTINGS}
    return make_settings(
        tmp_path,
        environment="production",
        database_url=database_url,
        image_store="gcs",
        gcs_bucket=TEST_BUCKET,
        **sellers,
    )


def wait_until_ready(client: TestClient, timeout_s: float = 15.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    response = client.get(READINESS)
    while response.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        response = client.get(READINESS)
    return response


@pytest.mark.postgres
def test_readiness_waits_for_migration(
    tmp_path: Path, postgres_url: str, fake_gcs: FakeCloudStorage
) -> None:
    settings = production_settings(tmp_path, postgres_url)

    with TestClient(create_app(settings)) as client:
        starting = client.get(READINESS)
        route = client.get("/api/v1/plans")
        liveness = client.get(LIVENESS)
        health = client.get(HEALTH)
        upgrade_database(postgres_url)
        ready = wait_until_ready(client)
        served = client.get("/api/v1/plans")

    assert starting.status_code == 503
    assert starting.json() == {
        "status": "fail",
        "output": "starting: waiting for the database",
        "failing": ["database"],
    }
    assert route.status_code == 503
    assert route.json()["code"] == "service_starting"
    assert route.headers["retry-after"] == "5"
    assert liveness.status_code == 200
    assert health.status_code == 503
    assert health.json()["checks"]["database:responseTime"] == [{"status": "fail"}]
    assert health.json()["notes"][0] == "starting: waiting for the database"
    assert ready.status_code == 200
    assert served.status_code == 200


def test_readiness_waits_for_backend_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_gemini: FakeGeminiAPI
) -> None:
    for variable in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("GOOGLE_GENAI_USE_ENTERPRISE", raising=False)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.base_url)
    settings = make_settings(tmp_path, image_backend="gemini")

    with TestClient(create_app(settings)) as client:
        starting = client.get(READINESS)
        monkeypatch.setenv("GOOGLE_API_KEY", TEST_API_KEY)
        ready = wait_until_ready(client)

    assert starting.status_code == 503
    assert starting.json()["failing"] == ["imageBackend"]
    assert ready.status_code == 200
    assert fake_gemini.requests == []


def test_backend_check_reads_last_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_gemini: FakeGeminiAPI
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.base_url)
    settings = make_settings(tmp_path, image_backend="gemini", health_cache_s=0.05)
    generations = "/api/v1/images/generations"

    def backend_entry(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
        time.sleep(0.06)  # past the cache period
        entry: dict[str, Any] = client.get(HEALTH, headers=headers).json()["checks"][
            "imageBackend:lastCall"
        ][0]
        return entry

    with TestClient(create_app(settings)) as client:
        admin = admin_key(settings)
        before = backend_entry(client, admin)
        assert client.post(generations, json={"prompt": "a kite"}, headers=admin).status_code == 200
        after_success = backend_entry(client, admin)
        fake_gemini.enqueue(rate_limited())
        assert client.post(generations, json={"prompt": "a kite"}, headers=admin).status_code == 429
        after_limit = backend_entry(client, admin)

    assert (before["status"], before["observedValue"]) == ("pass", None)
    assert after_success["status"] == "pass"
    assert isinstance(after_success["observedValue"], float)
    assert after_limit["status"] == "warn"
    assert "'rate_limited'" in after_limit["output"]
    assert len(fake_gemini.requests) == 2


@pytest.mark.parametrize(
    ("outcome", "status_code"),
    [(CheckOutcome(HealthStatus.WARN, output="slow"), 200), (CheckOutcome(HealthStatus.FAIL), 503)],
)
def test_health_status_code_follows_critical_checks(
    tmp_path: Path, outcome: CheckOutcome, status_code: int
) -> None:
    app = create_app(make_settings(tmp_path))

    async def check() -> CheckOutcome:
        return outcome

    app.state.health.register("queue", check)
    with TestClient(app) as client:
        health = client.get(HEALTH)
        readiness = client.get(READINESS)

    assert health.status_code == status_code
    assert readiness.status_code == status_code
