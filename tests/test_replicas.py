"""Several server processes on one database: shared limits and balance, crash recovery.

Each server is `python -m app.cli serve` in its own process on a free port of 127.0.0.1,
configured through VISIONCRAFT_* variables as an operator would. The test stops each one by
its process id.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import httpx
import pytest
from conftest import (
    TEST_SECRET_KEY,
    add_plan,
    bearer,
    create_account_key,
    free_port,
    ledger_and_balance,
    make_settings,
    unique_redis_prefix,
)
from sqlalchemy import select

from app.container import build_services
from app.settings import Settings
from app.storage.tables import CreditReservation
from fakes.gemini_api import TEST_API_KEY, FakeGeminiAPI, ImageReply

GENERATIONS = "/api/v1/images/generations"
START_TIMEOUT_S = 60


class ServerProcess:
    """`visioncraft serve` in a subprocess with the given VISIONCRAFT_* settings."""

    def __init__(self, data_dir: Path, **variables: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("VISIONCRAFT_", "GOOGLE_", "GEMINI_"))
        }
        env.update(
            {
                "VISIONCRAFT_DATA_DIR": str(data_dir),
                "VISIONCRAFT_SECRET_KEY": TEST_SECRET_KEY,
                "VISIONCRAFT_PORT": str(self.port),
                "VISIONCRAFT_LOG_LEVEL": "WARNING",
                "VISIONCRAFT_IMAGE_BACKEND": "demo",
                # SIGTERM stops the server without the drain, so these tests keep their timing;
                # test_shutdown.py covers the drain.
                "VISIONCRAFT_SHUTDOWN_DRAIN_S": "0",
            }
        )
        env.update(variables)
        self.log_path = data_dir / f"server-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> ServerProcess:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited at start: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/api/v1/plans", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not start within {START_TIMEOUT_S} s")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def kill(self) -> None:
        """End the process at once, as a crash or an out-of-memory kill would."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self._log.close()


async def _post_all(targets: list[tuple[str, str]], body: dict[str, object]) -> list[int]:
    """POST a generation to each (base URL, key) at once; return the statuses in order."""
    async with httpx.AsyncClient(timeout=60) as client:
        responses = await asyncio.gather(
            *(
                client.post(f"{base_url}{GENERATIONS}", json=body, headers=bearer(token))
                for base_url, token in targets
            )
        )
    return [response.status_code for response in responses]


@pytest.fixture
def shared_servers(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess, Settings]]:
    variables = {
        "VISIONCRAFT_DATABASE_URL": postgres_url,
        "VISIONCRAFT_REDIS_URL": redis_url,
        "VISIONCRAFT_REDIS_KEY_PREFIX": unique_redis_prefix(),
    }
    settings = make_settings(tmp_path, database_url=postgres_url)
    # One after the other: the first applies the migrations that the second finds done.
    with (
        ServerProcess(tmp_path, **variables) as first,
        ServerProcess(tmp_path, **variables) as second,
    ):
        yield first, second, settings


@pytest.mark.postgres
@pytest.mark.redis
def test_two_servers_share_rate_limit_and_balance(
    shared_servers: tuple[ServerProcess, ServerProcess, Settings],
) -> None:
    first, second, settings = shared_servers
    add_plan(settings, "six", requests_per_minute=6)
    add_plan(settings, "bulk", monthly_credits=0)
    _, limited = create_account_key(settings, "six@example.com", plan="six")
    account_id, funded = create_account_key(
        settings, "bulk@example.com", plan="bulk", purchased_credits=4
    )

    rate_statuses = [
        httpx.get(
            f"{server.base_url}/api/v1/account", headers=bearer(limited), timeout=30
        ).status_code
        for server in [first, second] * 5
    ]
    credit_statuses = asyncio.run(
        _post_all([(server.base_url, funded) for server in [first, second] * 6], {"prompt": "kite"})
    )
    (allowance_sum, purchased_sum), total = ledger_and_balance(settings, account_id)

    assert rate_statuses == [200] * 6 + [429] * 4
    assert Counter(credit_statuses) == {200: 4, 402: 8}
    assert total == 0
    assert (allowance_sum, purchased_sum) == (0, 0)


async def _reservation_statuses(settings: Settings) -> list[str]:
    services = build_services(settings)
    try:
        async with services.sessions() as session:
            return list(await session.scalars(select(CreditReservation.status)))
    finally:
        await services.aclose()


@pytest.mark.slow
def test_killed_server_leaves_reservation_the_next_start_releases(
    tmp_path: Path, fake_gemini: FakeGeminiAPI
) -> None:
    # A reservation is stale 8 + 1 s after it was made. The fake backend replies after 30 s, so the
    # generation is still running (its own timeout is 8 s) when a second server starts and
    # when the first is killed.
    fake_gemini.default_reply = ImageReply(delay_s=30)
    variables = {
        "VISIONCRAFT_IMAGE_BACKEND": "gemini",
        "GOOGLE_API_KEY": TEST_API_KEY,
        "GOOGLE_GEMINI_BASE_URL": fake_gemini.base_url,
        "VISIONCRAFT_REQUEST_TIMEOUT_S": "8",
        "VISIONCRAFT_BACKEND_TIMEOUT_S": "8",
        "VISIONCRAFT_STALE_RESERVATION_MARGIN_S": "1",
    }
    settings = make_settings(tmp_path)
    crashing = ServerProcess(tmp_path, **variables)
    request: subprocess.Popen[bytes] | None = None
    try:
        crashing.__enter__()
        account_id, token = create_account_key(settings, "crash@example.com")
        request = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import httpx, sys; httpx.post(sys.argv[1], json={'prompt': 'kite'}, "
                "headers={'Authorization': 'Bearer ' + sys.argv[2]}, timeout=60)",
                f"{crashing.base_url}{GENERATIONS}",
                token,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert fake_gemini.wait_until(lambda: len(fake_gemini.requests) == 1, timeout_s=30)
        made_at = time.monotonic()
        with ServerProcess(tmp_path, **variables):
            kept_by_live_peer = asyncio.run(_reservation_statuses(settings))
        crashing.kill()
        after_kill = asyncio.run(_reservation_statuses(settings))
        time.sleep(max(0.0, made_at + 9.5 - time.monotonic()))
        with ServerProcess(tmp_path, **variables):
            after_restart = asyncio.run(_reservation_statuses(settings))
    finally:
        crashing.stop()
        if request is not None:
            request.kill()
            request.wait(timeout=30)
    (allowance_sum, purchased_sum), total = ledger_and_balance(settings, account_id)

    assert kept_by_live_peer == ["held"]
    assert after_kill == ["held"]
    assert after_restart == ["refunded"]
    assert total == 50
    assert (allowance_sum, purchased_sum) == (50, 0)
