"""No secret reaches logs, spans, metrics or OTLP: requests carry secrets, every signal is searched."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import create_key, export_to, make_settings
from fastapi.testclient import TestClient

from app.main import create_app
from fakes.gemini_api import TEST_API_KEY, FakeGeminiAPI
from fakes.otlp_receiver import OtlpReceiver
from telemetry import configure_logging

METRICS_TOKEN = "metrics-secret-token-9a7e"
STRIPE_SECRET = "sk_live_51SecretStripeKeyForTests"
WEBHOOK_SIGNATURE = (
    "t=1765000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
)
BOGUS_KEY = "vc_live_AAAAAAAAAAAAAAAA_bogusbogusbogusbogusbogus1234"


def test_secrets_stay_out_of_every_signal(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
    otlp_receiver: OtlpReceiver,
    fake_gemini: FakeGeminiAPI,
) -> None:
    configure_logging(json_lines=True, level="DEBUG")
    export_to(monkeypatch, otlp_receiver.http_endpoint, "http/protobuf")
    monkeypatch.setenv("GOOGLE_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.base_url)
    settings = make_settings(
        tmp_path, image_backend="gemini", metrics_token=METRICS_TOKEN, log_level="DEBUG"
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        key = create_key(settings)
        auth = {"Authorization": f"Bearer {key}"}
        generated = client.post(GENERATIONS, json={"prompt": "a quiet harbour"}, headers=auth)
        image_url = generated.json()["data"][0]["url"]
        signature = dict(part.split("=", 1) for part in urlsplit(image_url).query.split("&"))[
            "signature"
        ]
        assert client.get(image_url.removeprefix(str(client.base_url))).status_code == 200
        assert (
            client.get(
                "/api/v1/models", headers={"Authorization": f"Bearer {BOGUS_KEY}"}
            ).status_code
            == 401
        )
        client.post(
            "/api/v1/billing/webhook",
            content=f'{{"secret": "{STRIPE_SECRET}"}}',
            headers={"Stripe-Signature": WEBHOOK_SIGNATURE, "Content-Type": "application/json"},
        )
        metrics_auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        metrics_text = client.get("/metrics", headers=metrics_auth).text
        metrics_json = client.get("/api/v1/monitoring/metrics", headers=metrics_auth).text
        assert otlp_receiver.wait_for(lambda: bool(otlp_receiver.metric_names))
    logs = capsys.readouterr().out

    secrets = {
        "API key": key,
        "API key secret": key.rsplit("_", 1)[1],
        "unknown API key": BOGUS_KEY,
        "metrics token": METRICS_TOKEN,
        "Gemini API key": TEST_API_KEY,
        "Stripe secret": STRIPE_SECRET,
        "webhook signature": WEBHOOK_SIGNATURE.split("v1=")[1],
        "image URL signature": signature,
    }
    otlp = b"".join(otlp_receiver.raw)
    assert otlp_receiver.spans and otlp_receiver.logs and '"trace_id"' in logs
    for name, secret in secrets.items():
        index = otlp.find(secret.encode())
        assert index < 0, f"{name} reached OTLP: {otlp[max(0, index - 300) : index + 60]!r}"
        assert secret not in logs, f"{name} reached the logs"
        assert secret not in metrics_text, f"{name} reached /metrics"
        assert secret not in metrics_json, f"{name} reached the JSON metrics"


GENERATIONS = "/api/v1/images/generations"
