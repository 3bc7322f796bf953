"""The service objects of one running app, built from the settings and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider, TracerProvider
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.accounts.keys import KeyService
from app.accounts.service import AccountService
from app.generation.backend import ImageBackend
from app.generation.demo import DemoBackend
from app.generation.metrics import GenerationTelemetry
from app.generation.service import GenerationService
from app.settings import BackendName, ImageStoreName, Settings
from app.storage.blobs import ImageStore, LocalImageStore
from app.storage.database import create_engine, create_session_factory
from app.storage.signing import UrlSigner
from app.storage.tracing import trace_statements


@dataclass
class Services:
    settings: Settings
    meter_provider: MeterProvider
    tracer_provider: TracerProvider
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: ImageStore
    accounts: AccountService
    keys: KeyService
    generation: GenerationService
    signer: UrlSigner

    async def aclose(self) -> None:
        await self.generation.aclose()
        await self.store.aclose()
        await self.engine.dispose()


def build_backends(
    settings: Settings, *, tracer_provider: TracerProvider | None = None
) -> dict[str, ImageBackend]:
    """Build the demo backend (always, for test keys) and the gemini one when it is configured.

    With a tracer provider, the gemini backend's HTTP calls get client spans.
    """
    backends: dict[str, ImageBackend] = {"demo": DemoBackend()}
    if settings.resolved_backend is BackendName.GEMINI:
        from app.generation.gemini import GeminiBackend  # imported only when configured

        backends["gemini"] = GeminiBackend(settings.gemini_model, tracer_provider=tracer_provider)
    return backends


def build_store(settings: Settings) -> ImageStore:
    if settings.image_store is ImageStoreName.LOCAL:
        return LocalImageStore(settings.data_dir / "images")
    raise NotImplementedError("the gcs image store is not built yet")


def build_services(
    settings: Settings,
    *,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    capture_content: bool = False,
) -> Services:
    """Build every service object; each takes its Meter and Tracer from the given providers.

    The app owns its providers (no global ones), so tests can build two apps in one process.
    Without providers, the no-op ones record nothing. `capture_content` lets prompts reach
    spans and logs (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT).
    """
    traced = tracer_provider is not None
    meter_provider = meter_provider or NoOpMeterProvider()
    tracer_provider = tracer_provider or NoOpTracerProvider()
    engine = create_engine(settings.resolved_database_url)
    if traced:
        trace_statements(engine, tracer_provider)
    sessions = create_session_factory(engine)
    store = build_store(settings)
    generation = GenerationService(
        sessions=sessions,
        store=store,
        backends=build_backends(settings, tracer_provider=tracer_provider if traced else None),
        live_backend=settings.resolved_backend.value,
        backend_timeout_s=settings.backend_timeout_s,
        request_timeout_s=settings.request_timeout_s,
        telemetry=GenerationTelemetry(
            meter_provider,
            tracer_provider,
            capture_content=capture_content,
            image_prices_usd=settings.upstream_image_prices_usd,
        ),
    )
    return Services(
        settings=settings,
        meter_provider=meter_provider,
        tracer_provider=tracer_provider,
        engine=engine,
        sessions=sessions,
        store=store,
        accounts=AccountService(sessions),
        keys=KeyService(sessions, settings.resolved_secret_key),
        generation=generation,
        signer=UrlSigner(settings.resolved_secret_key),
    )
