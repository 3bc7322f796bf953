"""Run every benchmark and print one table of side-by-side results: `make bench`.

Each scenario starts its servers in their own processes on 127.0.0.1 and loads them with `hey`,
alternating the sides in every repetition (the order rotates) so that drift of the machine falls
on both. The fakes of the tests stand in for the outside world, in this process: the OTLP
receiver plays the collector, and the fake Gemini API plays a backend with a fixed latency.
Results go to the terminal and to bench/results/.

Run: .venv/bin/python -m bench.run [--repetitions N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from bench.load import LoadResult, require_hey, run_hey
from bench.report import Report, difference_row, ratio_row, value_row
from bench.servers import LIVENESS_PATH, READINESS_PATH, ROOT, Server, Servers

sys.path.insert(0, str(ROOT / "tests"))
from fakes.gemini_api import TEST_API_KEY, FakeGeminiAPI, ImageReply
from fakes.otlp_receiver import OtlpReceiver

ACCOUNT_PATH = "/api/v1/account"
GENERATIONS_PATH = "/api/v1/images/generations"
GENERATION_BODY = json.dumps({"prompt": "a lighthouse at dusk", "aspect_ratio": "1:1"})
SLOW_PROMPT = "slow lighthouse"
TEN_PERCENT = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
CLOSED_PORT_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing listens there
STANDIN_DELAY_S = 0.2
IN_FLIGHT_DELAY_S = 12.0
IN_FLIGHT_GENERATIONS = 200


@dataclass(frozen=True)
class Sizes:
    """How much load each scenario sends; `--quick` divides it for a trial of the harness."""

    repetitions: int = 5
    route_requests: int = 1000
    route_concurrency: int = 20
    generation_requests: int = 120
    generation_concurrency: int = 4
    latency_requests: int = 50
    standin_single: int = 20
    standin_parallel: int = 400
    probe_requests: int = 2000
    probe_in_flight: int = 1000
    memory_chunks: int = 5
    memory_chunk: int = 2000
    render_samples: int = 20

    def quick(self) -> Sizes:
        return Sizes(
            repetitions=2,
            route_requests=600,
            generation_requests=16,
            latency_requests=8,
            standin_single=5,
            standin_parallel=100,
            probe_requests=600,
            probe_in_flight=200,
            memory_chunks=2,
            memory_chunk=500,
            render_samples=5,
        )


def log(message: str) -> None:
    print(message, flush=True)


def rotations(names: Sequence[str], repetitions: int) -> list[list[str]]:
    """List the order of the sides for each repetition, rotated by one each time."""
    return [
        list(names[i % len(names) :]) + list(names[: i % len(names)]) for i in range(repetitions)
    ]


def alternate(
    names: Sequence[str], repetitions: int, measure: Callable[[str], LoadResult]
) -> dict[str, list[LoadResult]]:
    """Call `measure(name)` for every side in every repetition; return the results per side."""
    results: dict[str, list[LoadResult]] = {name: [] for name in names}
    for order in rotations(names, repetitions):
        for name in order:
            results[name].append(measure(name))
    return results


def check_answers(result: LoadResult, description: str) -> LoadResult:
    if result.errors:
        statuses = ", ".join(
            f"{count} x {status}" for status, count in sorted(result.statuses.items())
        )
        raise RuntimeError(
            f"{description}: {result.errors} of {result.requested} requests failed "
            f"(statuses: {statuses})"
        )
    return result


def throughputs(results: list[LoadResult]) -> list[float]:
    return [result.throughput for result in results]


def p50s(results: list[LoadResult]) -> list[float]:
    return [result.p50 for result in results]


def p99s(results: list[LoadResult]) -> list[float]:
    return [result.p99 for result in results]


def pooled(results: list[LoadResult]) -> list[float]:
    """Collect the latencies of all repetitions in one list."""
    return [latency for result in results for latency in result.latencies_ms]


# In the process: the demo image and /metrics.


def demo_render(report: Report, sizes: Sizes) -> None:
    from app.generation.backend import ImageSpec
    from app.generation.demo import render_png
    from app.generation.options import ImageSize

    log("Demo backend: draw and encode one 1024x1024 PNG")
    durations = []
    png_sizes = []
    for seed in range(sizes.render_samples + 2):
        spec = ImageSpec("a lighthouse at dusk", "demo", "1:1", ImageSize.K1, 1, seed)
        started = time.perf_counter()
        data, size = render_png(spec, seed)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if seed >= 2:  # the first two warm up Pillow
            durations.append(elapsed_ms)
            png_sizes.append(len(data))
    assert size == (1024, 1024), size
    report.facts["demo PNG sizes (they depend on the seed)"] = (
        f"{min(png_sizes) / 1024:.0f} to {max(png_sizes) / 1024:.0f} KiB"
    )
    report.add(
        value_row(
            "demo backend",
            "1024x1024 PNG, drawn and encoded (per sample)",
            durations,
            unit="ms",
            at_most=150,
            target="< 150 ms",
        ),
        log,
    )


async def _metrics_render_ms(added_series: Sequence[int], samples: int) -> dict[int, list[float]]:
    from app.main import create_app
    from app.settings import Settings

    settings = Settings(
        _env_file=None, data_dir=Path(tempfile.mkdtemp()), image_backend="demo", log_level="ERROR"
    )
    app = create_app(settings)
    meter = app.state.telemetry.meter_provider.get_meter("bench")
    # The SDK keeps at most 2,000 attribute sets per instrument (its cardinality limit), so the
    # series are spread over instruments of 2,000 each.
    counters = [
        meter.create_counter(f"bench_series_{n}") for n in range(max(added_series) // 2000 + 1)
    ]
    durations: dict[int, list[float]] = {}
    added_so_far = 0
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench") as client,
    ):
        for total in added_series:
            for index in range(added_so_far, total):
                counters[index // 2000].add(1, {"series": str(index)})
            added_so_far = total
            durations[total] = []
            for _ in range(samples + 2):
                started = time.perf_counter()
                response = await client.get("/metrics")
                durations[total].append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            durations[total] = durations[total][2:]
            series = sum(1 for line in response.text.splitlines() if line and line[0] != "#")
            durations[-total] = [float(series)]
    return durations


def metrics_render(report: Report, sizes: Sizes) -> None:
    log("/metrics: render time with 10 and with 10,000 added series")
    durations = asyncio.run(_metrics_render_ms((10, 10_000), sizes.render_samples))
    for added in (10, 10_000):
        series = int(durations[-added][0])
        report.facts[f"/metrics series with {added:,} added"] = f"{series:,} in total"
        report.add(
            value_row(
                "/metrics render",
                f"{added:,} added series ({series:,} in total), per request",
                durations[added],
                unit="ms",
                at_most=50 if added == 10_000 else None,
                target="< 50 ms" if added == 10_000 else "",
            ),
            log,
        )
    report.add(
        value_row(
            "/metrics render",
            "for scale: prometheus_client alone, 10,000 series of one counter, per render",
            _prometheus_client_render_ms(10_000, sizes.render_samples),
            unit="ms",
        ),
        log,
    )


def _prometheus_client_render_ms(series: int, samples: int) -> list[float]:
    """Time prometheus_client writing `series` series of its own counter, with no OpenTelemetry.

    This is the text format's cost alone, the floor under any exposition built on it.
    """
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    registry = CollectorRegistry()
    counter = Counter("bench_series", "Series for the benchmark.", ["series"], registry=registry)
    for index in range(series):
        counter.labels(str(index)).inc()
    durations = []
    for _ in range(samples + 2):
        started = time.perf_counter()
        generate_latest(registry)
        durations.append((time.perf_counter() - started) * 1000)
    return durations[2:]


# Over HTTP.


def trivial_route(report: Report, sizes: Sizes, workdir: Path, otlp: str) -> None:
    log(
        f"GET {ACCOUNT_PATH} (an authenticated route doing one key lookup), {sizes.route_concurrency} at a time"
    )
    on = Server("route-on", "service", workdir, {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp})
    sampled = Server(
        "route-on-10%", "service", workdir, {**TEN_PERCENT, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp}
    )
    off = Server("route-off", "service", workdir, {"OTEL_SDK_DISABLED": "true"})
    instrumentator = Server("route-instrumentator", "instrumentator", workdir, {})
    contrib = Server("route-contrib", "contrib", workdir, {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp})
    servers = {server.name: server for server in (on, sampled, off, instrumentator, contrib)}
    cpu_ms: dict[str, list[float]] = {name: [] for name in servers}
    with Servers(*servers.values()):
        for server in servers.values():
            report.facts[f"RSS at idle, {server.name}"] = f"{server.rss_mb():.0f} MB"

        def measure(name: str, requests: int = sizes.route_requests) -> LoadResult:
            server = servers[name]
            cpu_before = server.cpu_s()
            result = run_hey(
                server.url(ACCOUNT_PATH),
                requests=requests,
                concurrency=sizes.route_concurrency,
                headers=server.auth,
            )
            cpu_ms[name].append((server.cpu_s() - cpu_before) * 1000 / requests)
            return check_answers(result, name)

        for name in servers:
            measure(name, requests=max(300, sizes.route_requests // 10))
        results = alternate(list(servers), sizes.repetitions, measure)

    for name in servers:
        del cpu_ms[name][: -sizes.repetitions]  # drop the warm-up
        report.add_latencies("authenticated route", name, pooled(results[name]))
    scenario = "authenticated route"
    for name, label in (
        ("route-on", "telemetry on / off"),
        ("route-on-10%", "telemetry on, 10% of traces sampled / off"),
        ("route-instrumentator", "peer: prometheus-fastapi-instrumentator / off"),
        ("route-contrib", "peer: opentelemetry-instrumentation-fastapi / off"),
    ):
        sides = {name: throughputs(results[name]), "route-off": throughputs(results["route-off"])}
        if name == "route-on":
            report.add(
                ratio_row(scenario, f"throughput, {label}", sides, at_least=0.8, target=">= 0.8"),
                log,
            )
        else:
            report.add(ratio_row(scenario, f"throughput, {label}", sides), log)
    for name in servers:
        rates = throughputs(results[name])
        report.facts[f"{scenario}, {name}"] = (
            f"{statistics.median(rates):.0f} req/s, p50 {statistics.median(p50s(results[name])):.2f} ms, "
            f"p99 {statistics.median(p99s(results[name])):.2f} ms, "
            f"server CPU {statistics.median(cpu_ms[name]):.2f} ms per request"
        )
    for name in ("route-on", "route-on-10%"):
        report.add(
            difference_row(
                scenario,
                f"server CPU per request, {name.removeprefix('route-')} - off",
                {name: cpu_ms[name], "route-off": cpu_ms["route-off"]},
            ),
            log,
        )
    report.add(
        difference_row(
            scenario,
            "p50 added by telemetry, on - off",
            {"route-on": p50s(results["route-on"]), "route-off": p50s(results["route-off"])},
        ),
        log,
    )


def generation(report: Report, sizes: Sizes, workdir: Path, otlp: str) -> None:
    log("POST /api/v1/images/generations, demo backend, 1:1 1K, on the `unlimited` plan")
    servers = {
        "off": Server("gen-off", "service", workdir, {"OTEL_SDK_DISABLED": "true"}),
        "on": Server("gen-on", "service", workdir, {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp}),
        "collector down": Server(
            "gen-collector-down",
            "service",
            workdir,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": CLOSED_PORT_ENDPOINT},
        ),
        "instrumentator": Server("gen-instrumentator", "instrumentator", workdir, {}),
    }
    names = list(servers)
    with Servers(*servers.values()):

        def load(name: str, requests: int, concurrency: int) -> LoadResult:
            server = servers[name]
            result = run_hey(
                server.url(GENERATIONS_PATH),
                requests=requests,
                concurrency=concurrency,
                method="POST",
                headers=server.auth,
                json_body=GENERATION_BODY,
            )
            return check_answers(result, f"generation, {name}")

        for name in names:
            load(name, 8, 4)
        throughput = alternate(
            names,
            sizes.repetitions,
            lambda name: load(name, sizes.generation_requests, sizes.generation_concurrency),
        )
        latency = alternate(
            names, sizes.repetitions, lambda name: load(name, sizes.latency_requests, 1)
        )
        for name, server in servers.items():
            report.facts[f"RSS after the generations, {name}"] = f"{server.rss_mb():.0f} MB"

    scenario = "generation (demo)"
    rate = {name: throughputs(results) for name, results in throughput.items()}
    single_p50 = {name: p50s(results) for name, results in latency.items()}
    report.add(
        ratio_row(
            scenario,
            f"throughput at {sizes.generation_concurrency} concurrent, telemetry on / off",
            {"on": rate["on"], "off": rate["off"]},
            at_least=0.95,
            target=">= 0.95",
        ),
        log,
    )
    report.add(
        difference_row(
            scenario,
            "p50 added by telemetry, one at a time, on - off",
            {"on": single_p50["on"], "off": single_p50["off"]},
            at_most=1.0,
            target="<= 1 ms",
        ),
        log,
    )
    report.add(
        ratio_row(
            scenario,
            "throughput, collector down / up",
            {"collector down": rate["collector down"], "on": rate["on"]},
            at_least=0.95,
            target=">= 0.95",
        ),
        log,
    )
    report.add(
        ratio_row(
            scenario,
            f"p99 at {sizes.generation_concurrency} concurrent, collector down / up",
            {
                "collector down": p99s(throughput["collector down"]),
                "on": p99s(throughput["on"]),
            },
            at_most=1.05,
            target="<= 1.05",
            side_unit="ms",
        ),
        log,
    )
    report.add(
        ratio_row(
            scenario,
            "throughput, peer: prometheus-fastapi-instrumentator / off",
            {"instrumentator": rate["instrumentator"], "off": rate["off"]},
        ),
        log,
    )
    for name in names:
        report.add_latencies(
            f"generation, {sizes.generation_concurrency} concurrent", name, pooled(throughput[name])
        )
        report.add_latencies("generation, one at a time", name, pooled(latency[name]))
        report.facts[f"{scenario}, {name}"] = (
            f"{statistics.median(rate[name]):.1f} images/s at {sizes.generation_concurrency} "
            f"concurrent (p50 {statistics.median(p50s(throughput[name])):.0f} ms, "
            f"p95 {statistics.median(result.p95 for result in throughput[name]):.0f} ms, "
            f"p99 {statistics.median(p99s(throughput[name])):.0f} ms); "
            f"p50 {statistics.median(single_p50[name]):.1f} ms one at a time"
        )


def backend_ms(fake: FakeGeminiAPI, since: float) -> list[float]:
    """Return how long the fake took to respond to each request that arrived after `since`."""
    return [
        (record.answered_at - record.arrived_at) * 1000
        for record in fake.requests
        if record.arrived_at >= since and record.answered_at is not None
    ]


def standin_backend(report: Report, sizes: Sizes, workdir: Path, otlp: str) -> None:
    log(
        f"A stand-in backend answering after {STANDIN_DELAY_S * 1000:.0f} ms; then probes with generations in flight"
    )
    with FakeGeminiAPI() as fake:
        fake.default_reply = ImageReply(delay_s=STANDIN_DELAY_S)
        fake.reply_when_prompt_contains(SLOW_PROMPT, ImageReply(delay_s=IN_FLIGHT_DELAY_S))
        server = Server(
            "standin",
            "service",
            workdir,
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
                "VISIONCRAFT_IMAGE_BACKEND": "gemini",
                "GOOGLE_API_KEY": TEST_API_KEY,
                "GOOGLE_GEMINI_BASE_URL": fake.base_url,
                # The run makes thousands of images; the estimated spend would reach the
                # default daily cap and turn the rest into 503s.
                "VISIONCRAFT_DAILY_SPEND_CAP_USD": "0",
                # The in-flight generations may outlast the run: stop without waiting for them.
                "VISIONCRAFT_SHUTDOWN_DRAIN_S": "0",
                "VISIONCRAFT_SHUTDOWN_GRACE_S": "1",
            },
        )
        with Servers(server):

            def generate(requests: int, concurrency: int) -> tuple[list[float], LoadResult]:
                since = time.monotonic()
                result = run_hey(
                    server.url(GENERATIONS_PATH),
                    requests=requests,
                    concurrency=concurrency,
                    method="POST",
                    headers=server.auth,
                    json_body=GENERATION_BODY,
                )
                return backend_ms(fake, since), check_answers(result, "stand-in backend")

            generate(10, 2)
            for concurrency, requests in ((1, sizes.standin_single), (50, sizes.standin_parallel)):
                service, backend = [], []
                for _ in range(sizes.repetitions):
                    backend_times, result = generate(requests, concurrency)
                    service.append(result.p50)
                    backend.append(statistics.median(backend_times))
                report.add(
                    difference_row(
                        "stand-in backend (200 ms)",
                        f"service p50 - backend p50, {concurrency} concurrent",
                        {"service": service, "backend": backend},
                        at_most=5.0 if concurrency == 50 else None,
                        target="< 5 ms" if concurrency == 50 else "",
                    ),
                    log,
                )
            probes_in_flight(report, sizes, server, fake)


def probes_in_flight(report: Report, sizes: Sizes, server: Server, fake: FakeGeminiAPI) -> None:
    body = json.dumps({"prompt": SLOW_PROMPT, "aspect_ratio": "1:1"})
    # The generations' own load generator, in its own process; they wait on the fake.
    generations = subprocess.Popen(
        [
            "hey",
            *("-n", str(IN_FLIGHT_GENERATIONS), "-c", str(IN_FLIGHT_GENERATIONS)),
            *("-m", "POST", "-T", "application/json", "-d", body, "-t", "60"),
            *("-H", f"Authorization: Bearer {server.key}"),
            server.url(GENERATIONS_PATH),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The backend's HTTP pool opens at most 100 connections to the API; the other
        # generations wait for one inside the service. All are in flight in the server.
        def arrived() -> int:
            return sum(SLOW_PROMPT in record.prompt for record in fake.requests)

        fake.wait_until(lambda: arrived() >= 100, timeout_s=30)
        time.sleep(0.5)
        at_backend = arrived()
        started = time.monotonic()
        readiness = run_hey(
            server.url(READINESS_PATH), requests=sizes.probe_in_flight, concurrency=1
        )
        liveness = run_hey(server.url(LIVENESS_PATH), requests=sizes.probe_in_flight, concurrency=1)
        elapsed = time.monotonic() - started
        still_running = generations.poll() is None
    finally:
        generations.wait(timeout=IN_FLIGHT_DELAY_S * 2 + 60)
    if elapsed > IN_FLIGHT_DELAY_S - 1 or not still_running:
        raise RuntimeError("the generations ended before the probes did; raise IN_FLIGHT_DELAY_S")
    report.facts["generations in flight during the probes"] = (
        f"{IN_FLIGHT_GENERATIONS} sent, {at_backend} waiting at the backend, the rest for a "
        "connection to it"
    )
    for name, result in (
        ("readiness", check_answers(readiness, "readiness")),
        ("liveness", check_answers(liveness, "liveness")),
    ):
        report.add(
            value_row(
                "probes, 200 generations in flight",
                f"{name} p99, one probe at a time",
                [result.p99],
                unit="ms",
                at_most=100,
                target="< 100 ms",
            ),
            log,
        )
        report.facts[f"{name} with generations in flight"] = (
            f"p50 {result.p50:.2f} ms, p99 {result.p99:.2f} ms, slowest {result.latencies_ms[-1]:.1f} ms"
        )


def probes(report: Report, sizes: Sizes, workdir: Path, otlp: str) -> None:
    log("Probes against a bare FastAPI route on the same uvicorn settings")
    service = Server("probes", "service", workdir, {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp})
    bare = Server("bare", "bare", workdir, {})
    targets = {
        "liveness": service.url(LIVENESS_PATH),
        "readiness": service.url(READINESS_PATH),
        "bare route": bare.url(LIVENESS_PATH),
    }
    with Servers(service, bare):

        def measure(name: str, requests: int = sizes.probe_requests) -> LoadResult:
            return check_answers(run_hey(targets[name], requests=requests, concurrency=10), name)

        for name in targets:
            measure(name, 300)
        results = alternate(list(targets), sizes.repetitions, measure)
    for name in ("liveness", "readiness"):
        report.add(
            ratio_row(
                "probes",
                f"throughput at 10 concurrent, {name} / bare route",
                {
                    name: throughputs(results[name]),
                    "bare route": throughputs(results["bare route"]),
                },
                at_least=0.9,
                target=">= 0.9",
            ),
            log,
        )
        report.add(
            difference_row(
                "probes",
                f"p50 at 10 concurrent, {name} - bare route",
                {name: p50s(results[name]), "bare route": p50s(results["bare route"])},
            ),
            log,
        )


def memory(report: Report, sizes: Sizes, workdir: Path, otlp: str) -> None:
    total = sizes.memory_chunks * sizes.memory_chunk
    log(f"Memory: RSS at idle and after {total:,} requests, collector up and down")
    servers = {
        "collector up": Server(
            "memory-up", "service", workdir, {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp}
        ),
        "collector down": Server(
            "memory-down", "service", workdir, {"OTEL_EXPORTER_OTLP_ENDPOINT": CLOSED_PORT_ENDPOINT}
        ),
    }
    rss: dict[str, list[float]] = {name: [] for name in servers}
    with Servers(*servers.values()):
        for name, server in servers.items():
            check_answers(
                run_hey(server.url(ACCOUNT_PATH), requests=1, concurrency=1, headers=server.auth),
                name,
            )
        time.sleep(3)
        idle = {name: server.rss_mb() for name, server in servers.items()}
        for order in rotations(list(servers), sizes.memory_chunks):
            for name in order:
                server = servers[name]
                result = run_hey(
                    server.url(ACCOUNT_PATH),
                    requests=sizes.memory_chunk,
                    concurrency=20,
                    headers=server.auth,
                )
                check_answers(result, f"memory, {name}")
                rss[name].append(server.rss_mb())
    for name in servers:
        report.facts[f"RSS, {name}: idle, then after each {sizes.memory_chunk:,} requests"] = (
            ", ".join(f"{value:.1f}" for value in [idle[name], *rss[name]]) + " MB"
        )
    report.add(
        value_row(
            "memory",
            "RSS at idle, collector up",
            [idle["collector up"]],
            unit="MB",
            at_most=150,
            target="< 150 MB",
        ),
        log,
    )
    for name in servers:
        report.add(
            value_row(
                "memory",
                f"RSS growth from {sizes.memory_chunk:,} to {total:,} requests, {name}",
                [rss[name][-1] - rss[name][0]],
                unit="MB",
                at_most=5.0,
                target="<= 5 MB (noise)",
            ),
            log,
        )
    report.add(
        ratio_row(
            "memory",
            f"RSS after {total:,} requests, collector down / up",
            {
                "collector down": [rss["collector down"][-1]],
                "collector up": [rss["collector up"][-1]],
            },
            at_most=1.05,
            target="<= 1.05",
            side_unit="MB",
        ),
        log,
    )


SCENARIOS = {
    "demo": lambda report, sizes, workdir, otlp: demo_render(report, sizes),
    "metrics": lambda report, sizes, workdir, otlp: metrics_render(report, sizes),
    "route": trivial_route,
    "generation": generation,
    "standin": standin_backend,
    "probes": probes,
    "memory": memory,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repetitions", type=int, default=None, help="Repetitions per side (default 5)."
    )
    parser.add_argument("--quick", action="store_true", help="Small loads: try the harness.")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="Run these.")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--render", type=Path, metavar="RUN.json", help="Print a saved run's tables and exit."
    )
    args = parser.parse_args()
    if args.render is not None:
        print(Report.from_json(json.loads(args.render.read_text())).to_markdown())
        return

    require_hey()
    # Leave through the `with` blocks on SIGTERM too, so that they stop the servers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    sizes = Sizes().quick() if args.quick else Sizes()
    if args.repetitions is not None:
        sizes = replace(sizes, repetitions=args.repetitions)

    report = Report()
    log(f"Machine: {report.machine}")
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="visioncraft-bench-") as folder,
        OtlpReceiver() as receiver,
    ):
        for name, scenario in SCENARIOS.items():
            if args.only and name not in args.only:
                continue
            scenario(report, sizes, Path(folder) / name, receiver.grpc_endpoint)
            receiver.spans.clear()
            receiver.logs.clear()
            receiver.raw.clear()

    report.facts["wall time of the run"] = f"{time.monotonic() - started:.0f} s"
    report.machine["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    written = report.save(args.results)

    print()
    print(report.to_markdown())
    log("Saved " + ", ".join(str(path) for path in written))


if __name__ == "__main__":
    main()
