"""Throughput and latency of a trivial route with telemetry off, on, exporting, and exporting
to a collector that is down.

Starts the service with uvicorn on 127.0.0.1 once per mode and loads `GET /openapi.json` with
`hey` (apt-get install hey). The route does no I/O, so the differences are the per-request cost
of telemetry. "exporting" sends spans, metrics and logs over gRPC to the OTLP receiver of the
tests, run in this process (so it shares the CPU); "exporting 10%" samples one trace in ten;
"collector down" sends them to a closed port.

Run: .venv/bin/python bench/telemetry_overhead.py [REQUESTS]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fakes.otlp_receiver import OtlpReceiver

CLOSED_PORT_ENDPOINT = "http://127.0.0.1:9"
CONCURRENCY = "20"
SERVER = """
import os, sys, uvicorn
from app.main import create_app
from telemetry import configure_logging
configure_logging(json_lines=True, level="WARNING")
app = create_app()
if os.environ.get("BENCH_TELEMETRY") == "off":
    app._telemetry.update(tracing=False, metrics=False)  # FastAPI reads this dict per request
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1).read()  # noqa: S310 - an http URL we built
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the service at {url} did not start within 10 s")


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
        wait_until_up(url)
        subprocess.run(
            ["hey", "-n", "500", "-c", CONCURRENCY, url], capture_output=True, check=True
        )
        report = subprocess.run(
            ["hey", "-n", str(requests), "-c", CONCURRENCY, url],
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
    p50_ms, p99_ms = float(p50[1]) * 1000, float(p99[1]) * 1000
    return f"{mode:<15} {float(rate[1]):8.0f} req/s  p50 {p50_ms:6.1f} ms  p99 {p99_ms:6.1f} ms"


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    with OtlpReceiver() as receiver:
        modes = {
            "off": {"BENCH_TELEMETRY": "off"},
            "on": {},
            "exporting": {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint},
            "exporting 10%": {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.1",
            },
            "collector down": {"OTEL_EXPORTER_OTLP_ENDPOINT": CLOSED_PORT_ENDPOINT},
        }
        for mode, extra_env in modes.items():
            print(run(mode, {**extra_env, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, requests))


if __name__ == "__main__":
    main()
