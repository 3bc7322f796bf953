"""Fixtures shared by the test modules: settings, databases, the app, keys and fake servers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from starlette.types import ASGIApp

from app.accounts.keys import KeyMode
from app.container import Services, build_services
from app.errors import NotFoundError
from app.main import create_app
from app.settings import Settings
from app.storage.tables import Plan
from fakes.gcs_api import FakeCloudStorage
from fakes.gemini_api import FakeGeminiAPI
from fakes.otlp_receiver import OtlpReceiver
from telemetry.logs import QUIET_HTTP_CLIENT_LOGGERS

TEST_DATABASE_URL_VARIABLE = "VISIONCRAFT_TEST_DATABASE_URL"
TEST_REDIS_URL_VARIABLE = "VISIONCRAFT_TEST_REDIS_URL"
TEST_SECRET_KEY = "test-secret-key-" + "x" * 32
TEST_BUCKET = "visioncraft-test-images"


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


def require_tool(name: str, install: str) -> str:
    """Return the path of the command `name`; skip when it is missing, but fail in CI.

    Commands that pip installs into the virtualenv are found beside the running Python too.
    """
    beside_python = Path(sys.executable).parent / name
    path = shutil.which(name) or (str(beside_python) if beside_python.exists() else None)
    if path:
        return path
    if running_in_ci():
        pytest.fail(f"{name} is missing in CI: .ci/run must install it ({install})")
    pytest.skip(f"{name} is missing: install it ({install}) to run this test")


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


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """Create a new, empty PostgreSQL database and return its URL; drop it on exit."""
    base_url = require_server_variable(TEST_DATABASE_URL_VARIABLE, "PostgreSQL")
    name = f"vc_test_{os.getpid()}_{secrets.token_hex(4)}"
    asyncio.run(_run_postgres_admin(base_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_run_postgres_admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database of a test that must hold on SQLite and on PostgreSQL alike."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database that the tests of one module share, on SQLite and on PostgreSQL alike.

    For modules whose tests each make their own accounts, so one migrated database serves all.
    """
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        return
    with postgres_database() as url:
        yield url


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


def add_plan(settings: Settings, name: str, **columns: object) -> None:
    """Insert a plan row, as an operator would; unset limits are 0 (unlimited)."""
    values: dict[str, object] = {
        "display_name": name.title(),
        "price": 0,
        "monthly_credits": 0,
        "credits_per_image_1k": 1,
        "credits_per_image_2k": 2,
        "credits_per_image_4k": 4,
        "requests_per_minute": 0,
        "concurrent_generations": 0,
        "images_per_request": 0,
        "renewal": "cycle",
        "is_public": False,
        "sort_order": 100,
    }
    values.update(columns)

    async def insert() -> None:
        services = build_services(settings)
        try:
            async with services.sessions.begin() as session:
                session.add(Plan(name=name, **values))
        finally:
            await services.aclose()

    asyncio.run(insert())


def create_account_key(
    settings: Settings,
    email: str,
    *,
    plan: str = "free",
    purchased_credits: int = 0,
    role: str = "user",
    mode: KeyMode = KeyMode.LIVE,
    scopes: list[str] | None = None,
) -> tuple[str, str]:
    """Create an account on `plan` with `purchased_credits` granted and a key; return both ids.

    The database of `settings` must be migrated already. Returns (account id, API key).
    """

    async def create() -> tuple[str, str]:
        services = build_services(settings)
        try:
            account = await services.accounts.create(email, role=role, plan=plan)
            if purchased_credits:
                await services.credits.grant(account.id, purchased_credits, reason="test")
            created = await services.keys.create(account.id, name="test", mode=mode, scopes=scopes)
            return account.id, created.token
        finally:
            await services.aclose()

    return asyncio.run(create())


def ledger_and_balance(settings: Settings, account_id: str) -> tuple[tuple[int, int], int]:
    """Return the sums of the account's ledger columns (allowance, purchased) and its balance."""

    async def read() -> tuple[tuple[int, int], int]:
        services = build_services(settings)
        try:
            total = (await services.credits.balance(account_id)).total
            return await services.credits.ledger_totals(account_id), total
        finally:
            await services.aclose()

    return asyncio.run(read())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def redis_url() -> str:
    return require_server_variable(TEST_REDIS_URL_VARIABLE, "Redis")


def unique_redis_prefix() -> str:
    """A key prefix of its own for one test, so parallel runs on one Redis never collide."""
    return f"vc-test:{os.getpid()}:{secrets.token_hex(6)}:"


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

    def __init__(
        self, settings: Settings, *, wrap: Callable[[ASGIApp], ASGIApp] | None = None
    ) -> None:
        """Serve `create_app(settings)`, inside the ASGI wrapper `wrap` when one is given."""
        self.settings = settings
        self.app = create_app(settings)
        self.base_url = f"http://127.0.0.1:{settings.port}"
        served = wrap(self.app) if wrap else self.app
        config = uvicorn.Config(
            served, host="127.0.0.1", port=settings.port, log_config=None, access_log=False
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
def fake_gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloudStorage]:
    """Serve a fake Cloud Storage with the bucket TEST_BUCKET and point the client at it.

    With STORAGE_EMULATOR_HOST set, google-cloud-storage sends no credentials; NO_GCE_CHECK
    keeps google-auth from probing the metadata server of a Google Cloud machine. The client's
    background lookup of bucket metadata (for span attributes) is switched off, because its
    thread may still be running when the test ends.
    """
    with FakeCloudStorage(TEST_BUCKET) as fake:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake.base_url)
        monkeypatch.setenv("NO_GCE_CHECK", "True")
        monkeypatch.setenv("DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA", "true")
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        yield fake
        # NOTE: google-cloud-storage 3.17 leaves the streamed response of a failed download
        # open until it is garbage-collected. Collect it here, where its ResourceWarning cannot
        # fail a later test.
        if any(request.status >= 400 for request in fake.requests_of("download")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                gc.collect()
    assert fake.handler_errors == []


class SmtpServer:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.messages: list[EmailMessage] = []
        self._received = threading.Condition()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=email_policy.default)
        assert isinstance(message, EmailMessage)
        with self._received:
            self.messages.append(message)
            self._received.notify_all()
        return "250 Message accepted"

    def wait_for(self, recipient: str, count: int = 1, timeout_s: float = 10) -> EmailMessage:
        """Return the `count`-th message to `recipient`, waiting for it to arrive."""
        with self._received:
            self._received.wait_for(lambda: len(self.to(recipient)) >= count, timeout=timeout_s)
            received = self.to(recipient)
        assert len(received) >= count, f"no mail number {count} to {recipient} arrived"
        return received[count - 1]

    def to(self, recipient: str) -> list[EmailMessage]:
        return [message for message in self.messages if message["To"] == recipient]

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._controller.stop()


def link_in(message: EmailMessage, path: str) -> str:
    """Return the path and query of the first link to `path` in a mail's text."""
    body = message.get_content()
    match = re.search(rf"https?://[^/\s]+({re.escape(path)}\?\S+)", body)
    assert match, f"no link to {path} in: {body}"
    return match.group(1)


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


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
    client_levels = {name: logging.getLogger(name).level for name in QUIET_HTTP_CLIENT_LOGGERS}
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
