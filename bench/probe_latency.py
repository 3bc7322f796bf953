"""Latency of the readiness and liveness probes: in the process, over HTTP, and over HTTP while
hundreds of generations are in flight.

1. In the process: the full ASGI stack (middleware, routing, the probe) called with a bare
   ASGI request, without a client or a network. This is the server time of a probe.
2. Over HTTP: `visioncraft serve` on 127.0.0.1, probed one request at a time with `hey`
   (apt-get install hey), idle and then with GENERATIONS generations in flight. The generations
   use the gemini backend against the fake Gemini API of the tests (run in this process), which
   delays each response by 20 s, so they all wait on the backend while the probes run.

Run: .venv/bin/python bench/probe_latency.py [GENERATIONS]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import TEST_SECRET_KEY, create_key, free_port, make_settings

from app.main import create_app
from fakes.gemini_api import TEST_API_KEY, FakeGeminiAPI, ImageReply

PROBES = ("/api/v1/monitoring/readiness", "/api/v1/monitoring/liveness")
IN_PROCESS_CALLS = 5000
HEY_REQUESTS = "2000"
BACKEND_DELAY_S = 20.0


async def in_process_ms(path: str) -> list[float]:
    """Call the app with `path` as a bare ASGI request; return each call's milliseconds.

    The time runs from handing the request to the app until its last response message: the
    server's own time, with no client or network in it.
    """
    app = create_app(make_settings(Path(tempfile.mkdtemp()), log_level="WARNING"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, object]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))  # type: ignore[call-overload]

    durations = []
    async with app.router.lifespan_context(app):
        for _ in range(IN_PROCESS_CALLS):
            started = time.perf_counter()
            await app(dict(scope), receive, send)
            durations.append((time.perf_counter() - started) * 1000)
    assert set(statuses) == {200}, statuses[:5]
    return durations


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def hey(url: str) -> str:
    """Probe `url` one request at a time; return the p50, p99 and slowest latency in ms."""
    report = subprocess.run(
        ["hey", "-n", HEY_REQUESTS, "-c", "1", url], capture_output=True, text=True, check=True
    ).stdout
    quantiles = dict(re.findall(r"\s+(\d+)% in ([\d.]+) secs", report))
    slowest = float(re.search(r"Slowest:\s+([\d.]+) secs", report)[1])  # type: ignore[index]
    codes = re.search(r"\[(\d+)\]\s+(\d+) responses", report)
    return (
        f"p50 {float(quantiles['50']) * 1000:.2f} ms, p99 {float(quantiles['99']) * 1000:.2f} ms, "
        f"slowest {slowest * 1000:.2f} ms, status {codes[1] if codes else '?'}"
    )


def main() -> None:
    generations = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    print("In the process (full ASGI stack, no network):")
    for path in PROBES:
        durations = asyncio.run(in_process_ms(path))
        print(
            f"  {path}: mean {statistics.mean(durations):.3f} ms, "
            f"p50 {percentile(durations, 0.5):.3f} ms, p90 {percentile(durations, 0.9):.3f} ms, "
            f"p99 {percentile(durations, 0.99):.3f} ms"
        )

    data_dir = Path(tempfile.mkdtemp())
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with FakeGeminiAPI() as fake:
        fake.reply_when_prompt_contains("bench", ImageReply(delay_s=BACKEND_DELAY_S))
        environment = {
            **os.environ,
            "VISIONCRAFT_DATA_DIR": str(data_dir),
            "VISIONCRAFT_PORT": str(port),
            "VISIONCRAFT_SECRET_KEY": TEST_SECRET_KEY,
            "VISIONCRAFT_LOG_LEVEL": "WARNING",
            "VISIONCRAFT_IMAGE_BACKEND": "gemini",
            "GOOGLE_API_KEY": TEST_API_KEY,
            "GOOGLE_GEMINI_BASE_URL": fake.base_url,
            # The generations still wait on the fake when the benchmark ends: stop at once.
            "VISIONCRAFT_SHUTDOWN_DRAIN_S": "0",
            "VISIONCRAFT_SHUTDOWN_GRACE_S": "1",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"], env=environment, cwd=data_dir
        )
        try:
            for _ in range(300):
                try:
                    if httpx.get(base_url + PROBES[0], timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            print("Over HTTP, idle:")
            for path in PROBES:
                print(f"  {path}: {hey(base_url + path)}")
            key = create_key(make_settings(data_dir))
            running = load_generations(base_url, key, generations)
            # httpx lets the backend open 100 connections to the API, so the other generations
            # wait in its pool. All of them are in flight in the server.
            fake.wait_until(lambda: len(fake.requests) >= min(generations, 100), timeout_s=15)
            before = sum(thread.is_alive() for thread in running)
            results = {path: hey(base_url + path) for path in PROBES}
            after = sum(thread.is_alive() for thread in running)
            print(
                f"Over HTTP, with {before} generations in flight at the start, {after} at the end:"
            )
            for path, result in results.items():
                print(f"  {path}: {result}")
        finally:
            server.terminate()
            server.wait(timeout=60)


def load_generations(base_url: str, key: str, count: int) -> list[threading.Thread]:
    """Start `count` generations in threads; each thread ends with its generation's response."""

    def generate() -> None:
        # The server may stop before the fake responds.
        with contextlib.suppress(httpx.TransportError):
            httpx.post(
                base_url + "/api/v1/images/generations",
                json={"prompt": "bench lighthouse"},
                headers={"Authorization": f"Bearer {key}"},
                timeout=BACKEND_DELAY_S + 30,
            )

    threads = [threading.Thread(target=generate, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


if __name__ == "__main__":
    main()
