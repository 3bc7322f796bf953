"""Settings: defaults, parsing, and the production guard against unsafe defaults."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.main import create_app
from app.settings import SELLER_SETTINGS, BackendName, Settings, UnsafeSettingsError


def test_defaults_are_the_embedded_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(variable, raising=False)
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]

    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.resolved_backend is BackendName.DEMO
    assert (
        settings.resolved_database_url
        == f"sqlite+aiosqlite:///{(tmp_path / 'visioncraft.db').resolve()}"
    )
    assert settings.resolved_public_base_url == "http://127.0.0.1:8000"


def test_backend_is_gemini_when_google_key_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "not-a-real-key")
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]

    assert settings.resolved_backend is BackendName.GEMINI


def test_settings_read_prefixed_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISIONCRAFT_PORT", "9123")
    monkeypatch.setenv("VISIONCRAFT_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7")
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]

    assert settings.port == 9123
    assert settings.trusted_proxies == [ip_network("10.0.0.0/8"), ip_network("192.168.1.7/32")]


def test_generated_secret_key_is_stable(tmp_path: Path) -> None:
    first = Settings(_env_file=None, data_dir=tmp_path).resolved_secret_key  # type: ignore[call-arg]
    second = Settings(_env_file=None, data_dir=tmp_path).resolved_secret_key  # type: ignore[call-arg]

    assert first == second
    assert len(first) >= 48
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_production_rejects_each_unsafe_default_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, data_dir=tmp_path, environment="production")  # type: ignore[call-arg]
    message = str(raised.value)

    assert "VISIONCRAFT_SECRET_KEY" in message
    assert "VISIONCRAFT_DATABASE_URL" in message
    assert "VISIONCRAFT_IMAGE_STORE" in message


def test_production_serve_requires_seller_details(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path,
        environment="production",
        secret_key="s" * 48,
        database_url="postgresql+asyncpg://app@db/visioncraft",
        image_store="gcs",
        gcs_bucket="images",
    )
    with pytest.raises(UnsafeSettingsError) as raised:
        create_app(settings)
    message = str(raised.value)

    for name in SELLER_SETTINGS:
        assert f"VISIONCRAFT_{name.upper()}" in message


def test_production_accepts_safe_settings(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path,
        environment="production",
        secret_key="s" * 48,
        database_url="postgresql+asyncpg://app@db/visioncraft",
        image_store="gcs",
        gcs_bucket="images",
        **{name: f"value of {name}" for name in SELLER_SETTINGS},
    )

    assert settings.is_production
    assert settings.resolved_log_format == "json"


def test_invalid_port_names_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONCRAFT_PORT", "http")
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]

    assert "port" in str(raised.value)
