"""Graceful shutdown of `visioncraft serve`, run as a real process that gets SIGTERM under load."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from conftest import TEST_SECRET_KEY, bearer, create_key, free_port, make_settings

from fakes.gemini_api import TEST_API_KEY, FakeGeminiAPI, ImageReply
from fakes.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.slow

READINESS = "/api/v1/monitoring/readiness"
GENERATIONS = "/api/v1/images/generations"
LOADED_ROUTE = "/api/v1/plans"
START_TIMEOUT_S = 60.0
# Extra time a test allows past the shutdown budget for the process to exit. It proves that
# nothing hangs; how fast the process exits is for the benchmarks.
EXIT_MARGIN_S = 3.0


def new_traceparent() -> tuple[str, str]:
    """Return a sampled W3C traceparent with a new trace id, and that trace id."""
    trace_id = secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01", trace_id


class ServeProcess:
    """`visioncraft serve` in a subprocess on 127.0.0.1, its output in a file for failures."""

    def __init__(self, data_dir: Path, variables: dict[str, str]) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "serve.log"
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("VISIONCRAFT_", "GOOGLE_", "GEMINI_", "OTEL_"))
        }
        environment.update(
            {
                "VISIONCRAFT_DATA_DIR": str(data_dir),
                "VISIONCRAFT_PORT": str(self.port),
                "VISIONCRAFT_SECRET_KEY": TEST_SECRET_KEY,
                "VISIONCRAFT_LOG_FORMAT": "json",
                **variables,
            }
        )
        self._log = self.log_path.open("w")
        # The working folder has no .env, so only these variables configure the service.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            cwd=data_dir,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"serve exited with {self.process.returncode}: {self.output()}"
                )
            try:
                if httpx.get(self.base_url + READINESS, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve was not ready within {START_TIMEOUT_S} s: {self.output()}")

    def terminate_and_wait(self, timeout_s: float) -> tuple[int, float]:
        """Send SIGTERM; return the exit status and the seconds until the process ended."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"serve did not exit within {timeout_s} s: {self.output()}"
            ) from None
        return status, time.monotonic() - sent

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for process in started:
        process.close()


@dataclass
class Load:
    """Requests sent one after another on keep-alive connections by a few threads."""

    base_url: str
    threads: int = 3
    stop: threading.Event = field(default_factory=threading.Event)
    results: list[tuple[float, str, int | str]] = field(default_factory=list)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)

    def finish(self) -> None:
        self.stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self.stop.is_set():
                traceparent, trace_id = new_traceparent()
                try:
                    response = client.get(LOADED_ROUTE, headers={"traceparent": traceparent})
                    outcome: int | str = response.status_code
                except httpx.TransportError as error:
                    outcome = f"{type(error).__name__}: {error}"
                self.results.append((time.monotonic(), trace_id, outcome))
                time.sleep(0.02)


def test_sigterm_drains_finishes_generation_and_flushes_spans(
    tmp_path: Path,
    serve_factory: list[ServeProcess],
    fake_gemini: FakeGeminiAPI,
    otlp_receiver: OtlpReceiver,
) -> None:
    drain_s, grace_s, flush_s = 1.5, 5.0, 3.0
    generation_s = drain_s + 1.5  # still running when the drain ends
    fake_gemini.reply_when_prompt_contains("slow", ImageReply(delay_s=generation_s))
    server = ServeProcess(
        tmp_path,
        {
            "VISIONCRAFT_IMAGE_BACKEND": "gemini",
            "GOOGLE_API_KEY": TEST_API_KEY,
            "GOOGLE_GEMINI_BASE_URL": fake_gemini.base_url,
            "VISIONCRAFT_SHUTDOWN_DRAIN_S": str(drain_s),
            "VISIONCRAFT_SHUTDOWN_GRACE_S": str(grace_s),
            "VISIONCRAFT_TELEMETRY_FLUSH_S": str(flush_s),
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.http_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            # Spans wait in the queue until the flush at shutdown sends them.
            "OTEL_BSP_SCHEDULE_DELAY": "600000",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        },
    )
    serve_factory.append(server)
    server.wait_until_ready()
    headers = bearer(create_key(make_settings(tmp_path)))
    generation: dict[str, httpx.Response] = {}
    generation_traceparent, generation_trace_id = new_traceparent()

    def generate() -> None:
        generation["response"] = httpx.post(
            server.base_url + GENERATIONS,
            json={"prompt": "a slow lighthouse"},
            headers={**headers, "traceparent": generation_traceparent},
            timeout=60,
        )

    load = Load(server.base_url)
    load.start()
    generator = threading.Thread(target=generate)
    generator.start()
    assert fake_gemini.wait_until(lambda: len(fake_gemini.requests) == 1, timeout_s=10)

    sent = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    readiness = httpx.get(server.base_url + READINESS, timeout=5)
    while readiness.status_code == 200 and time.monotonic() - sent < 1.0:
        readiness = httpx.get(server.base_url + READINESS, timeout=5)
    time.sleep(max(0.0, drain_s - 0.4 - (time.monotonic() - sent)))
    load.finish()
    status = server.process.wait(timeout=drain_s + grace_s + flush_s + EXIT_MARGIN_S)
    generator.join(timeout=30)

    assert readiness.status_code == 503, server.output()
    assert readiness.json()["output"] == "draining: the process is shutting down"
    during_drain = [outcome for at, _trace, outcome in load.results if at > sent]
    assert len(during_drain) > 5
    assert set(during_drain) == {200}, during_drain
    assert generation["response"].status_code == 200, server.output()
    assert len(generation["response"].json()["data"]) == 1
    assert status == 0, server.output()
    last_load_trace = load.results[-1][1]
    traces = {span.trace_id for span in otlp_receiver.spans}
    assert generation_trace_id in traces
    assert last_load_trace in traces


def test_shutdown_ends_within_budget_with_collector_down(
    tmp_path: Path, serve_factory: list[ServeProcess]
) -> None:
    drain_s, grace_s, flush_s = 0.5, 1.0, 1.0
    with socket.socket() as black_hole:
        # A collector that accepts connections and never responds, so exports wait on it.
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(64)
        server = ServeProcess(
            tmp_path,
            {
                "VISIONCRAFT_SHUTDOWN_DRAIN_S": str(drain_s),
                "VISIONCRAFT_SHUTDOWN_GRACE_S": str(grace_s),
                "VISIONCRAFT_TELEMETRY_FLUSH_S": str(flush_s),
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{black_hole.getsockname()[1]}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_BSP_SCHEDULE_DELAY": "600000",
                "OTEL_METRICS_EXPORTER": "none",
            },
        )
        serve_factory.append(server)
        server.wait_until_ready()
        for _ in range(5):
            assert httpx.get(server.base_url + LOADED_ROUTE, timeout=5).status_code == 200

        status, elapsed_s = server.terminate_and_wait(drain_s + grace_s + flush_s + EXIT_MARGIN_S)

    assert status == 0, server.output()
    assert elapsed_s < drain_s + grace_s + flush_s + EXIT_MARGIN_S
    assert "telemetry flush gave up after 1.0 s" in server.output()


@pytest.mark.parametrize(
    ("signals", "logged"),
    [
        ((signal.SIGINT,), "SIGINT received: readiness responds with 503; serving for 0.0 s more"),
        ((signal.SIGTERM, signal.SIGTERM), "SIGTERM during the drain: stopping now"),
    ],
    ids=["sigint", "sigterm-twice"],
)
def test_interactive_stop_skips_the_drain(
    tmp_path: Path,
    serve_factory: list[ServeProcess],
    signals: tuple[signal.Signals, ...],
    logged: str,
) -> None:
    drain_s, grace_s, flush_s = 60.0, 1.0, 1.0
    server = ServeProcess(
        tmp_path,
        {
            "VISIONCRAFT_SHUTDOWN_DRAIN_S": str(drain_s),
            "VISIONCRAFT_SHUTDOWN_GRACE_S": str(grace_s),
            "VISIONCRAFT_TELEMETRY_FLUSH_S": str(flush_s),
        },
    )
    serve_factory.append(server)
    server.wait_until_ready()

    for signal_number in signals:
        server.process.send_signal(signal_number)
        time.sleep(0.3)
    status = server.process.wait(timeout=grace_s + flush_s + EXIT_MARGIN_S)

    assert status == 0, server.output()
    assert logged in server.output()
