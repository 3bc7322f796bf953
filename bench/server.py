"""One server under test, in its own process: `python -m bench.server VARIANT PORT`.

Every variant runs on uvicorn with the settings of `visioncraft serve` (no access log, one
worker), so the variants differ only in the app:

- `service`: VisionCraftAI as `create_app()` builds it; its telemetry follows the OTEL_*
  variables, so OTEL_SDK_DISABLED=true gives the same service with telemetry off.
- `instrumentator`: the service with its own telemetry off and prometheus-fastapi-instrumentator
  added the way its README shows, the usual choice in FastAPI projects.
- `contrib`: the service with its own telemetry off and opentelemetry-instrumentation-fastapi
  added as commonly set up: an SDK tracer provider batching spans to OTLP and a Prometheus
  meter reader.
- `bare`: a FastAPI app with nothing but the liveness route, returning the service's body.
"""

from __future__ import annotations

import os
import sys

import uvicorn
from fastapi import FastAPI

LIVENESS_PATH = "/api/v1/monitoring/liveness"
PEER_METRICS_PATH = "/peer/metrics"


def service_app() -> FastAPI:
    from app.main import create_app
    from app.settings import get_settings
    from telemetry import configure_logging

    settings = get_settings()
    configure_logging(json_lines=settings.resolved_log_format == "json", level=settings.log_level)
    return create_app(settings)


def instrumentator_app() -> FastAPI:
    from prometheus_fastapi_instrumentator import Instrumentator

    os.environ["OTEL_SDK_DISABLED"] = "true"
    app = service_app()
    Instrumentator().instrument(app).expose(app, endpoint=PEER_METRICS_PATH)
    return app


def contrib_app() -> FastAPI:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The service reads OTEL_SDK_DISABLED when it builds its providers. The SDK providers made
    # below read it too, so it is unset again before they are made.
    os.environ["OTEL_SDK_DISABLED"] = "true"
    app = service_app()
    del os.environ["OTEL_SDK_DISABLED"]
    resource = Resource.create({"service.name": "visioncraft-contrib-peer"})
    tracer_provider = TracerProvider(resource=resource)
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
        )
    meter_provider = MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()])
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    return app


def bare_app() -> FastAPI:
    app = FastAPI()

    @app.get(LIVENESS_PATH)
    async def liveness() -> dict[str, str]:
        return {"status": "pass"}

    return app


VARIANTS = {
    "service": service_app,
    "instrumentator": instrumentator_app,
    "contrib": contrib_app,
    "bare": bare_app,
}


def main() -> None:
    variant, port = sys.argv[1], int(sys.argv[2])
    app = VARIANTS[variant]()
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, proxy_headers=False
    )


if __name__ == "__main__":
    main()
