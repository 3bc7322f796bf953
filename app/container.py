"""The service objects of one running app, built from the settings and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider, TracerProvider
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.accounts.credits import CreditService
from app.accounts.email_tokens import EmailTokenSigner
from app.accounts.gate import GateSettings, GenerationGate
from app.accounts.keys import KeyService
from app.accounts.limits import LimitStore, MemoryLimitStore, RedisLimitStore
from app.accounts.metrics import AccountMetrics
from app.accounts.plans import PlanCatalog
from app.accounts.ratelimit import DemoLimits, RequestLimiter, WebLimits
from app.accounts.service import AccountService
from app.accounts.sessions import BrowserSessionService
from app.accounts.usage import UsageService
from app.billing.events import EventProcessor
from app.billing.gateway import StripeGateway
from app.billing.metrics import BillingMetrics
from app.billing.revenue import RevenueService
from app.billing.service import BillingConfig, BillingService
from app.contact.service import ContactService
from app.generation.backend import ImageBackend
from app.generation.demo import DemoBackend
from app.generation.metrics import GenerationTelemetry
from app.generation.service import GenerationService
from app.mail import Mailer, OutboxMailer, SmtpMailer
from app.settings import GCS_BUCKET_MISSING, BackendName, ImageStoreName, Settings
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
    # One connection of its own for the health check, so a busy pool never fails readiness.
    health_engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: ImageStore
    accounts: AccountService
    keys: KeyService
    generation: GenerationService
    signer: UrlSigner
    contact: ContactService
    plans: PlanCatalog
    credits: CreditService
    limit_store: LimitStore
    limiter: RequestLimiter
    account_metrics: AccountMetrics
    usage: UsageService
    browser_sessions: BrowserSessionService
    email_tokens: EmailTokenSigner
    mailer: Mailer
    billing: BillingService
    revenue: RevenueService

    async def aclose(self) -> None:
        await self.billing.aclose()
        await self.generation.aclose()
        await self.store.aclose()
        await self.limit_store.aclose()
        await self.engine.dispose()
        await self.health_engine.dispose()


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
    """Build the image store that IMAGE_STORE names."""
    if settings.image_store is ImageStoreName.LOCAL:
        return LocalImageStore(settings.data_dir / "images")
    if not settings.gcs_bucket:
        raise ValueError(GCS_BUCKET_MISSING)
    from app.storage.gcs import GcsImageStore  # imported only when configured

    return GcsImageStore(settings.gcs_bucket)


def build_mailer(settings: Settings) -> Mailer:
    """Send over SMTP_URL when it is set, else write mails into DATA_DIR/outbox."""
    if settings.smtp_url is None:
        return OutboxMailer(settings.data_dir / "outbox")
    return SmtpMailer(settings.smtp_url.get_secret_value())


def build_limit_store(settings: Settings) -> LimitStore:
    """Share limits through Redis when REDIS_URL is set, else keep them in this process."""
    if settings.redis_url is None:
        return MemoryLimitStore()
    return RedisLimitStore(settings.redis_url.get_secret_value(), prefix=settings.redis_key_prefix)


def build_billing(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    plans: PlanCatalog,
    revenue: RevenueService,
    *,
    meter_provider: MeterProvider,
    tracer_provider: TracerProvider,
    account_metrics: AccountMetrics,
) -> BillingService:
    """Build billing. With a Stripe setting unset, billing is off and raises a 503 naming it."""
    public_base_url = settings.resolved_public_base_url
    missing = settings.missing_billing_settings
    if missing or settings.stripe_secret_key is None or settings.stripe_webhook_secret is None:
        return BillingService(
            sessions,
            plans,
            public_base_url=public_base_url,
            currency=settings.currency,
            missing_settings=missing,
        )
    gateway = StripeGateway(
        settings.stripe_secret_key.get_secret_value(),
        tracer_provider=tracer_provider,
        api_base=settings.stripe_api_base,
    )
    metrics = BillingMetrics(meter_provider, currency=settings.currency)
    processor = EventProcessor(
        sessions,
        gateway,
        plans,
        revenue,
        metrics=metrics,
        account_metrics=account_metrics,
        currency=settings.currency,
    )
    return BillingService(
        sessions,
        plans,
        public_base_url=public_base_url,
        currency=settings.currency,
        missing_settings=missing,
        config=BillingConfig(webhook_secret=settings.stripe_webhook_secret.get_secret_value()),
        gateway=gateway,
        processor=processor,
        metrics=metrics,
    )


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
    account_metrics = AccountMetrics(
        meter_provider, daily_spend_cap_usd=settings.daily_spend_cap_usd
    )
    plans = PlanCatalog(sessions)
    credits = CreditService(
        sessions,
        plans,
        account_metrics,
        purchase_url=f"{settings.resolved_public_base_url}/pricing",
    )
    limit_store = build_limit_store(settings)
    gate = GenerationGate(
        plans=plans,
        credits=credits,
        store=limit_store,
        metrics=account_metrics,
        settings=GateSettings(
            blocked_prompts_per_hour=settings.blocked_prompts_per_hour,
            lease_ttl_s=settings.request_timeout_s + settings.stale_reservation_margin_s,
            daily_spend_cap_usd=settings.daily_spend_cap_usd,
            cost_per_image_usd=settings.upstream_cost_per_image_usd,
        ),
    )
    generation = GenerationService(
        sessions=sessions,
        store=store,
        backends=build_backends(settings, tracer_provider=tracer_provider if traced else None),
        live_backend=settings.resolved_backend.value,
        backend_timeout_s=settings.backend_timeout_s,
        request_timeout_s=settings.request_timeout_s,
        gate=gate,
        telemetry=GenerationTelemetry(
            meter_provider,
            tracer_provider,
            capture_content=capture_content,
            image_costs_usd=settings.upstream_cost_per_image_usd,
        ),
    )
    revenue = RevenueService(sessions)
    billing = build_billing(
        settings,
        sessions,
        plans,
        revenue,
        meter_provider=meter_provider,
        tracer_provider=tracer_provider,
        account_metrics=account_metrics,
    )
    return Services(
        settings=settings,
        meter_provider=meter_provider,
        tracer_provider=tracer_provider,
        engine=engine,
        # Without pre-ping: the check's own query is the ping, and a pre-ping would double it.
        health_engine=create_engine(settings.resolved_database_url, pool_size=1, pre_ping=False),
        sessions=sessions,
        store=store,
        accounts=AccountService(sessions, plans, credits),
        keys=KeyService(sessions, settings.resolved_secret_key),
        generation=generation,
        signer=UrlSigner(settings.resolved_secret_key),
        contact=ContactService(sessions, max_per_hour=settings.contact_max_per_hour),
        plans=plans,
        credits=credits,
        limit_store=limit_store,
        limiter=RequestLimiter(
            limit_store,
            plans,
            DemoLimits(
                requests_per_minute=settings.demo_requests_per_minute,
                requests_per_day=settings.demo_requests_per_day,
            ),
            WebLimits(login_attempts_per_15_min=settings.login_attempts_per_15_min),
        ),
        account_metrics=account_metrics,
        usage=UsageService(sessions),
        browser_sessions=BrowserSessionService(
            sessions,
            idle_timeout_s=settings.session_idle_timeout_s,
            max_age_s=settings.session_max_age_s,
        ),
        email_tokens=EmailTokenSigner(settings.resolved_secret_key),
        mailer=build_mailer(settings),
        billing=billing,
        revenue=revenue,
    )
