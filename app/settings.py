"""Service settings: one object, read from `VISIONCRAFT_*` variables and `.env`."""

from __future__ import annotations

import os
import re
import secrets
from enum import StrEnum
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name, not a secret
# Cloud Storage's rule for bucket names without dots: 3 to 63 lower-case letters, digits,
# '-' and '_', starting and ending with a letter or digit. Dotted names may run to 222.
GCS_BUCKET_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{1,220}[a-z0-9])$")
GCS_BUCKET_MISSING = (
    "VISIONCRAFT_IMAGE_STORE=gcs needs VISIONCRAFT_GCS_BUCKET: set it to the name of the bucket "
    "that every replica shares"
)


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class BackendName(StrEnum):
    DEMO = "demo"
    GEMINI = "gemini"


class ImageStoreName(StrEnum):
    LOCAL = "local"
    GCS = "gcs"


class LogFormat(StrEnum):
    CONSOLE = "console"
    JSON = "json"


# The seller details that Japan's Act on Specified Commercial Transactions requires an online
# seller to publish (the 特定商取引法に基づく表記 page), by setting name.
SELLER_SETTINGS = (
    "seller_name",
    "seller_representative",
    "seller_address",
    "seller_phone",
    "seller_email",
    "seller_prices_note",
    "seller_payment_methods",
    "seller_delivery_timing",
    "seller_returns_policy",
)


class UnsafeSettingsError(ValueError):
    """A production setting is left at a default that is only safe on a developer's machine."""


def google_credentials_present(environ: dict[str, str] | None = None) -> bool:
    """Tell whether the google-genai SDK would find credentials in the environment."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get("GOOGLE_API_KEY") or environ.get("GEMINI_API_KEY"):
        return True
    # The SDK prefers GOOGLE_GENAI_USE_ENTERPRISE, the newer name of the Vertex AI switch.
    vertex = environ.get("GOOGLE_GENAI_USE_ENTERPRISE") or environ.get(
        "GOOGLE_GENAI_USE_VERTEXAI", ""
    )
    return vertex.lower() in {"1", "true"}


class Settings(BaseSettings):
    """Every setting of the service. Each field is documented in the README's settings table."""

    model_config = SettingsConfigDict(
        env_prefix="VISIONCRAFT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    environment: Environment = Field(
        Environment.DEVELOPMENT,
        description="`production` rejects unsafe defaults (generated SECRET_KEY, SQLite, local images).",
    )
    host: str = Field("127.0.0.1", description="Address that `visioncraft serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port that `visioncraft serve` listens on.")
    data_dir: Path = Field(
        Path("./var"),
        description="Folder for the SQLite file, local images and the generated secret.",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy async URL; SQLite in DATA_DIR when unset."
    )
    secret_key: SecretStr | None = Field(
        None,
        description="HMAC key for API keys, signed image URLs and sessions; same on every replica.",
    )
    public_base_url: str | None = Field(
        None, description="Absolute base of URLs in responses; http://HOST:PORT when unset."
    )
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated addresses or networks whose X-Forwarded-* headers are believed.",
    )
    image_backend: BackendName | None = Field(
        None, description="`demo` or `gemini`; gemini when Google credentials are set, else demo."
    )
    gemini_model: str = Field(
        "gemini-3.1-flash-image", description="Model id for the gemini backend."
    )
    backend_timeout_s: float = Field(
        60.0, gt=0, description="Timeout of one backend call, seconds."
    )
    request_timeout_s: float = Field(
        90.0, gt=0, description="Timeout of one generation request, seconds."
    )
    image_store: ImageStoreName = Field(ImageStoreName.LOCAL, description="`local` or `gcs`.")
    gcs_bucket: str | None = Field(None, description="Bucket of the `gcs` image store.")
    image_retention_days: int = Field(30, ge=1, description="Images older than this are deleted.")
    signed_url_ttl_s: int = Field(
        3600, ge=60, le=7 * 24 * 3600, description="Lifetime of signed image URLs, seconds."
    )
    max_request_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest accepted JSON request body, bytes."
    )
    log_format: LogFormat | None = Field(
        None, description="`console` or `json`; console in development, json in production."
    )
    log_level: str = Field("INFO", description="Level of the root logger.")
    contact_max_per_hour: int = Field(
        5, ge=1, description="Contact messages accepted per client address and hour."
    )
    seller_name: str | None = Field(None, description="Legal name of the seller.")
    seller_representative: str | None = Field(
        None, description="Name of the seller's representative (代表者)."
    )
    seller_address: str | None = Field(None, description="Postal address of the seller.")
    seller_phone: str | None = Field(None, description="Telephone number of the seller.")
    seller_email: str | None = Field(None, description="Contact email address of the seller.")
    seller_prices_note: str | None = Field(
        None, description="Where prices are shown and what they include, such as consumption tax."
    )
    seller_payment_methods: str | None = Field(
        None, description="Accepted payment methods and when payment is taken."
    )
    seller_delivery_timing: str | None = Field(
        None, description="When the service is delivered after payment."
    )
    seller_returns_policy: str | None = Field(
        None, description="Cancellation, refund and return terms."
    )
    redis_url: SecretStr | None = Field(
        None,
        description="Redis URL for rate limits shared by every replica; in-process when unset.",
    )
    redis_key_prefix: str = Field(
        "visioncraft:", description="Prefix of every Redis key, so that services can share one."
    )
    currency: str = Field(
        "jpy",
        pattern=r"^[a-z]{3}$",
        description="ISO 4217 code (lower case) of plan and credit pack prices.",
    )
    stale_reservation_margin_s: float = Field(
        60.0,
        ge=0,
        description="A credit reservation older than REQUEST_TIMEOUT_S plus this is released.",
    )
    blocked_prompts_per_hour: int = Field(
        20,
        ge=1,
        description="Safety-blocked generations one key may have per hour before it gets 429.",
    )
    daily_spend_cap_usd: float = Field(
        50.0,
        ge=0,
        description="Cap on the estimated upstream spend per UTC day, USD; 0 means no cap.",
    )
    upstream_cost_per_image_usd: dict[str, float] = Field(
        # NOTE: estimates of Gemini 3.1 Flash Image list prices from third-party listings in
        # late 2026, not from Google's price page; set them from your own Google bill.
        default_factory=lambda: {"1K": 0.07, "2K": 0.1, "4K": 0.15},
        description="Estimated upstream cost of one image by image size, USD (a JSON object).",
    )
    demo_requests_per_minute: int = Field(
        5, ge=1, description="Demo generations one client address may start per minute."
    )
    demo_requests_per_day: int = Field(
        20, ge=1, description="Demo generations one client address may start per UTC day."
    )
    stripe_secret_key: SecretStr | None = Field(
        None,
        description="Stripe secret API key (sk_live_... or sk_test_...); billing is off without it.",
    )
    stripe_webhook_secret: SecretStr | None = Field(
        None,
        description="Signing secret (whsec_...) of the Stripe webhook endpoint; billing is off "
        "without it.",
    )
    stripe_api_base: str | None = Field(
        None,
        description="Base URL of the Stripe API; Stripe's own when unset. For tests and stripe-mock.",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="When set, /metrics and the JSON metrics need `Authorization: Bearer` with it.",
    )
    smtp_url: SecretStr | None = Field(
        None,
        description="smtp://user:password@host:587 (STARTTLS) or smtps://...:465; without it "
        "mails are written to DATA_DIR/outbox.",
    )
    mail_from: str | None = Field(
        None,
        description="Sender of account mails; `VisionCraftAI <no-reply@HOST>` of PUBLIC_BASE_URL "
        "when unset.",
    )
    session_idle_timeout_s: int = Field(
        3 * 24 * 3600, ge=300, description="A browser session unused this long ends, seconds."
    )
    session_max_age_s: int = Field(
        30 * 24 * 3600,
        ge=3600,
        description="A browser session ends this long after log-in however active, seconds.",
    )
    login_attempts_per_15_min: int = Field(
        10,
        ge=1,
        description="Log-in attempts allowed per email address, and twice this per client "
        "address, in 15 minutes.",
    )
    telemetry_flush_s: float = Field(
        3.0, ge=0, description="At shutdown, seconds to flush telemetry before dropping it."
    )
    shutdown_drain_s: float = Field(
        5.0,
        ge=0,
        description="After SIGTERM, seconds to keep serving while readiness answers 503.",
    )
    shutdown_grace_s: float = Field(
        20.0,
        ge=0,
        description="After the drain, seconds that requests and generations in flight get to finish.",
    )
    health_cache_s: float = Field(
        2.0,
        gt=0,
        description="Seconds a health report is reused before the checks run again.",
    )
    health_check_timeout_s: float = Field(
        2.0, gt=0, description="Timeout of each health check, seconds."
    )
    health_disk_free_warn_mb: float = Field(
        1000.0,
        ge=0,
        description="The disk check warns below this much free space in DATA_DIR, MB.",
    )
    health_disk_free_fail_mb: float = Field(
        200.0,
        ge=0,
        description="The disk check fails below this much free space in DATA_DIR, MB.",
    )
    health_memory_warn_percent: float = Field(
        85.0,
        gt=0,
        le=100,
        description="The memory check warns above this share of the memory limit, percent.",
    )
    health_memory_fail_percent: float = Field(
        95.0,
        gt=0,
        le=100,
        description="The memory check fails above this share of the memory limit, percent.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [
                ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip()
            ]
        return value

    @field_validator("gcs_bucket")
    @classmethod
    def _check_bucket_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        labels_fit = all(len(label) <= 63 for label in value.split("."))
        if not GCS_BUCKET_PATTERN.match(value) or not labels_fit or ".." in value:
            raise ValueError(
                f"{value!r} is not a Cloud Storage bucket name: use 3 to 63 lower-case letters, "
                "digits, '-' and '_', starting and ending with a letter or digit, without gs://"
            )
        return value

    @model_validator(mode="after")
    def _require_bucket_for_gcs(self) -> Settings:
        if self.image_store is ImageStoreName.GCS and not self.gcs_bucket:
            raise ValueError(GCS_BUCKET_MISSING)
        return self

    @model_validator(mode="after")
    def _order_health_thresholds(self) -> Settings:
        if self.health_disk_free_fail_mb > self.health_disk_free_warn_mb:
            raise ValueError(
                f"VISIONCRAFT_HEALTH_DISK_FREE_FAIL_MB ({self.health_disk_free_fail_mb:g}) must not "
                f"be above VISIONCRAFT_HEALTH_DISK_FREE_WARN_MB ({self.health_disk_free_warn_mb:g})"
            )
        if self.health_memory_warn_percent > self.health_memory_fail_percent:
            raise ValueError(
                f"VISIONCRAFT_HEALTH_MEMORY_WARN_PERCENT ({self.health_memory_warn_percent:g}) must "
                f"not be above VISIONCRAFT_HEALTH_MEMORY_FAIL_PERCENT "
                f"({self.health_memory_fail_percent:g})"
            )
        return self

    @field_validator("upstream_cost_per_image_usd")
    @classmethod
    def _check_image_costs(cls, value: dict[str, float]) -> dict[str, float]:
        expected = {"1K", "2K", "4K"}
        if set(value) != expected or any(cost < 0 for cost in value.values()):
            raise ValueError(
                f"give a cost of 0 or more for each of 1K, 2K and 4K, such as "
                f'{{"1K": 0.07, "2K": 0.1, "4K": 0.15}}; got {value!r}'
            )
        return value

    @field_validator("public_base_url", "stripe_api_base")
    @classmethod
    def _strip_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _reject_unsafe_production_defaults(self) -> Settings:
        if self.environment is not Environment.PRODUCTION:
            return self
        problems = []
        if self.secret_key is None:
            problems.append(
                "VISIONCRAFT_SECRET_KEY is unset: set the same long random value on every replica "
                "(for example `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        if self.database_url is None or self.database_url.startswith("sqlite"):
            problems.append(
                "VISIONCRAFT_DATABASE_URL points at SQLite: set a postgresql+asyncpg:// URL"
            )
        if self.image_store is ImageStoreName.LOCAL:
            problems.append(
                "VISIONCRAFT_IMAGE_STORE is `local`: set `gcs` and VISIONCRAFT_GCS_BUCKET so that "
                "every replica serves every image"
            )
        if problems:
            raise UnsafeSettingsError(
                "unsafe settings for VISIONCRAFT_ENVIRONMENT=production: " + "; ".join(problems)
            )
        return self

    def check_seller_details(self) -> None:
        """Raise UnsafeSettingsError in production when a seller detail is unset.

        Japan's law on online sales requires them on the /legal/commerce page, so `serve` checks
        them; `migrate` and the other commands do not need them.
        """
        if not self.is_production:
            return
        unset = [name for name in SELLER_SETTINGS if not getattr(self, name)]
        if unset:
            names = ", ".join(f"VISIONCRAFT_{name.upper()}" for name in unset)
            raise UnsafeSettingsError(
                f"unsafe settings for VISIONCRAFT_ENVIRONMENT=production: {names} unset: the law "
                "on online sales in Japan requires the seller details on the /legal/commerce page"
            )

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    @property
    def missing_billing_settings(self) -> list[str]:
        """Name the unset Stripe settings; billing is on only when this is empty."""
        values = {
            "VISIONCRAFT_STRIPE_SECRET_KEY": self.stripe_secret_key,
            "VISIONCRAFT_STRIPE_WEBHOOK_SECRET": self.stripe_webhook_secret,
        }
        return [name for name, value in values.items() if not value or not value.get_secret_value()]

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'visioncraft.db').resolve()}"

    @cached_property
    def resolved_backend(self) -> BackendName:
        if self.image_backend is not None:
            return self.image_backend
        return BackendName.GEMINI if google_credentials_present() else BackendName.DEMO

    @cached_property
    def resolved_public_base_url(self) -> str:
        return self.public_base_url or f"http://{self.host}:{self.port}"

    @cached_property
    def resolved_mail_from(self) -> str:
        if self.mail_from:
            return self.mail_from
        host = urlsplit(self.resolved_public_base_url).hostname or "localhost"
        domain = host if "." in host and not host.replace(".", "").isdigit() else "localhost"
        return f"VisionCraftAI <no-reply@{domain}>"

    @cached_property
    def resolved_log_format(self) -> LogFormat:
        if self.log_format is not None:
            return self.log_format
        return LogFormat.JSON if self.is_production else LogFormat.CONSOLE

    @cached_property
    def resolved_secret_key(self) -> bytes:
        """Return SECRET_KEY, or in development a key generated once into DATA_DIR."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / SECRET_KEY_FILE
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # Write a private temporary file, then hard-link it into place: the link either
            # appears complete or fails, so two processes starting at once agree on one key.
            temporary = path.with_name(f"{SECRET_KEY_FILE}.{os.getpid()}.tmp")
            temporary.write_text(secrets.token_urlsafe(48))
            temporary.chmod(0o600)
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
        return path.read_text().strip().encode()


def get_settings() -> Settings:
    """Build the settings from the environment; tests build `Settings(...)` directly instead."""
    return Settings()
