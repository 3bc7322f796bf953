"""Throughput and latency of a trivial route with telemetry off, on, and with the collector down.

Starts the service with uvicorn on 127.0.0.1 once per mode and loads `GET /openapi.json` with
`hey` (apt-get install hey). FastAPI caches that response, so the numbers show the per-request
cost of the middleware and telemetry. Run: .venv/bin/python bench/telemetry_overhead.py [REQUESTS]
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

MODES = {
    "off": {"BENCH_TELEMETRY": "off"},
    "on": {},
    "collector down": {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    },
}
SERVER = """
import os, sys, uvicorn
from app.main import create_app
from telemetry import configure_logging
configure_logging(json_lines=True, level="WARNING")
app = create_app()
if os.environ.get("BENCH_TELEMETRY") == "off":
    app._telemetry.update(tracing=False, metrics=False)  # FastAPI keeps this dict for each request
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(mode: str, extra_env: dict[str, str], requests: int) -> str:
    port = free_port()
    env = {
        **os.environ,
        **extra_env,
        "VISIONCRAFT_DATA_DIR": tempfile.mkdtemp(),
        "VISIONCRAFT_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], env=env)
    url = f"http://127.0.0.1:{port}/openapi.json"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1).read()  # noqa: S310 - our own server
                break
            except OSError:
                time.sleep(0.1)
        subprocess.run(["hey", "-n", "500", "-c", "20", url], capture_output=True, check=True)
        report = subprocess.run(
            ["hey", "-n", str(requests), "-c", "20", url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", report)
    p50 = re.search(r"50%+ in ([\d.]+) secs", report)
    p99 = re.search(r"99%+ in ([\d.]+) secs", report)
    if rate is None or p50 is None or p99 is None:
        raise RuntimeError(f"hey printed no rate or percentiles:\n{report}")
    return f"{mode:<15} {float(rate[1]):8.0f} req/s  p50 {float(p50[1]) * 1000:6.1f} ms  p99 {float(p99[1]) * 1000:6.1f} ms"


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    for mode, extra_env in MODES.items():
        print(run(mode, extra_env, requests), flush=True)


if __name__ == "__main__":
    main()
