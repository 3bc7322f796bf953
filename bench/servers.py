"""Start, load and stop the servers under test, each in its own process on 127.0.0.1."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
READINESS_PATH = "/api/v1/monitoring/readiness"
LIVENESS_PATH = "/api/v1/monitoring/liveness"
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30
SECRET_KEY = "bench-secret-key-not-for-production-0123456789"  # noqa: S105 - bench only
TOKEN = re.compile(r"\bvc_(?:live|test)_\S+")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """One `bench.server` process: a variant of the app with its own data folder and key."""

    def __init__(self, name: str, variant: str, workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.variant = variant
        self.data_dir = workdir / name
        self.data_dir.mkdir(parents=True)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # The runner's own OTEL_* variables never leak into a server; each side sets its own.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "VISION"))}
        self.env = {
            **inherited,
            "VISIONCRAFT_DATA_DIR": str(self.data_dir),
            "VISIONCRAFT_SECRET_KEY": SECRET_KEY,
            "VISIONCRAFT_IMAGE_BACKEND": "demo",
            **env,
        }
        self.key = ""
        self._log = (workdir / f"{name}.log").open("wb")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.server", self.variant, str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        """Wait for readiness, then, for the service's variants, create an API key."""
        path = LIVENESS_PATH if self.variant == "bare" else READINESS_PATH
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start; see {self._log.name}")
            try:
                if httpx.get(self.base_url + path, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} was not ready within {START_TIMEOUT_S} s")
            time.sleep(0.2)
        if self.variant != "bare":
            self.key = self._create_key()

    def _create_key(self) -> str:
        """Make a key of the local default account (the `unlimited` plan) with the CLI."""
        output = subprocess.run(
            [sys.executable, "-m", "app.cli", "keys", "create", "--name", "bench"],
            cwd=self.data_dir,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        match = TOKEN.search(output)
        if match is None:
            raise RuntimeError(f"`visioncraft keys create` printed no key for {self.name}")
        return match.group(0)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def url(self, path: str) -> str:
        return self.base_url + path

    def rss_mb(self) -> float:
        assert self.process is not None
        rss: int = psutil.Process(self.process.pid).memory_info().rss
        return rss / 2**20

    def cpu_s(self) -> float:
        """CPU seconds the server process has used so far, in all its threads."""
        assert self.process is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        """Stop the process we started, by its PID: SIGTERM, then SIGKILL after a grace."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class Servers:
    """Start several servers at once, and stop all of them on leaving the `with` block."""

    def __init__(self, *servers: Server) -> None:
        self.servers = servers

    def __enter__(self) -> Servers:
        try:
            for server in self.servers:
                server.start()
            for server in self.servers:
                server.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
