"""Service settings: one object, read from `VISIONCRAFT_*` variables and `.env`."""

from __future__ import annotations

import os
import secrets
from enum import StrEnum
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name, not a secret


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
    metrics_token: SecretStr | None = Field(
        None,
        description="When set, /metrics and the JSON metrics need `Authorization: Bearer` with it.",
    )
    telemetry_flush_s: float = Field(
        3.0, ge=0, description="At shutdown, seconds to flush telemetry before dropping it."
    )
    upstream_image_prices_usd: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="Price per image of each model in US dollars, as `model=price,...`, for the "
        "estimated upstream cost metric; models left out are not counted.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [
                ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip()
            ]
        return value

    @field_validator("upstream_image_prices_usd", mode="before")
    @classmethod
    def _parse_prices(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        prices = {}
        for part in value.split(","):
            if not part.strip():
                continue
            model, separator, price = part.partition("=")
            if not separator or not model.strip():
                raise ValueError(
                    f"{part.strip()!r} is not `model=price`; write for example "
                    "`gemini-3.1-flash-image=0.04,gemini-3-pro-image=0.13`"
                )
            prices[model.strip()] = price.strip()
        return prices

    @field_validator("public_base_url")
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

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

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
