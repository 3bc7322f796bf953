"""Fixtures shared by the test modules: settings, databases, the app, keys and fake servers."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from app.accounts.keys import KeyMode
from app.container import Services, build_services
from app.errors import NotFoundError
from app.main import create_app
from app.settings import Settings
from fakes.gemini_api import FakeGeminiAPI
from fakes.otlp_receiver import OtlpReceiver

TEST_DATABASE_URL_VARIABLE = "VISIONCRAFT_TEST_DATABASE_URL"
TEST_REDIS_URL_VARIABLE = "VISIONCRAFT_TEST_REDIS_URL"
TEST_SECRET_KEY = "test-secret-key-" + "x" * 32


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_program(name: str, package: str) -> str:
    """Return the path of program `name`; skip when it is missing, but fail in CI."""
    path = shutil.which(name)
    if path:
        return path
    if running_in_ci():
        pytest.fail(f"{name} is missing in CI: .ci/run must install Debian's {package}")
    pytest.skip(f"{name} is missing: apt-get install {package}")


def require_server_variable(variable: str, what: str) -> str:
    """Return the URL in `variable`; skip when it is unset, but fail in CI, which sets it."""
    url = os.environ.get(variable)
    if url:
        return url
    if running_in_ci():
        pytest.fail(f"{variable} is unset in CI: .ci/run must point it at the {what} server")
    pytest.skip(f"{variable} is unset: set it to a {what} URL to run this test")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _postgres_admin_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _run_postgres_admin(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(_postgres_admin_url(url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    base_url = require_server_variable(TEST_DATABASE_URL_VARIABLE, "PostgreSQL")
    name = f"vc_test_{os.getpid()}_{secrets.token_hex(4)}"
    asyncio.run(_run_postgres_admin(base_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_run_postgres_admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database of a test that must hold on SQLite and on PostgreSQL alike."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "secret_key": TEST_SECRET_KEY,
        "image_backend": "demo",
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


def create_key(
    settings: Settings,
    *,
    mode: KeyMode = KeyMode.LIVE,
    scopes: list[str] | None = None,
    account_email: str | None = None,
) -> str:
    """Create an API key in the database of `settings` (already migrated); return the token.

    Without `account_email` the key belongs to the local default account; with one, to that
    account, which is created when it does not exist yet.
    """

    async def create() -> str:
        services = build_services(settings)
        try:
            if account_email is None:
                account = await services.accounts.ensure_local_account()
            else:
                try:
                    account = await services.accounts.get_by_email(account_email)
                except NotFoundError:
                    account = await services.accounts.create(account_email)
            created = await services.keys.create(account.id, name="test", mode=mode, scopes=scopes)
            return created.token
        finally:
            await services.aclose()

    return asyncio.run(create())


@pytest.fixture
def api_key(client: TestClient, settings: Settings) -> str:
    return create_key(settings)


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LiveServer:
    """A real uvicorn server for one app on 127.0.0.1, in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.base_url = f"http://127.0.0.1:{settings.port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=settings.port, log_config=None, access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start within 30 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(make_settings(tmp_path, port=free_port())) as server:
        yield server


@pytest.fixture
def fake_gemini() -> Iterator[FakeGeminiAPI]:
    """Serve a fake Gemini API on 127.0.0.1 that expects `TEST_API_KEY`, for one test."""
    with FakeGeminiAPI() as fake:
        yield fake
    assert fake.handler_errors == []


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """An OTLP receiver (gRPC and HTTP) on 127.0.0.1 for one test."""
    with OtlpReceiver() as receiver:
        yield receiver


def export_to(monkeypatch: pytest.MonkeyPatch, endpoint: str, protocol: str) -> None:
    """Point every signal at `endpoint`, with short batch delays so tests wait little."""
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger's handlers and level back after a test that configures logging."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access_disabled = logging.getLogger("uvicorn.access").disabled
    client_levels = {name: logging.getLogger(name).level for name in ("httpx", "httpx2")}
    try:
        yield
    finally:
        for name, client_level in client_levels.items():
            logging.getLogger(name).setLevel(client_level)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logging.getLogger("uvicorn.access").disabled = access_disabled
