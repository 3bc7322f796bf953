"""Billing over HTTP and from the command line: checkout, portal, revenue, sync, health, spans."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from billing_support import (
    CHECKOUT,
    BillingHarness,
    billing_settings,
    open_harness,
    refund_event,
    sync_stripe,
    with_services,
)
from conftest import bearer, create_account_key, create_key
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import update

from app.billing.gateway import StripeGateway
from app.billing.health import check_billing
from app.container import Services
from app.errors import BillingUnavailableError
from app.main import create_app
from app.settings import Settings
from app.storage.tables import CreditPack
from fakes.stripe_api import (
    TEST_SECRET_KEY,
    FakeStripeAPI,
    charge_object,
    event,
)

PORTAL = "/api/v1/billing/portal"
BASE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def fake_stripe() -> Iterator[FakeStripeAPI]:
    with FakeStripeAPI() as fake:
        yield fake
    assert fake.handler_errors == []


@pytest.fixture
def billing(tmp_path: Path, fake_stripe: FakeStripeAPI) -> Iterator[BillingHarness]:
    settings = billing_settings(tmp_path, fake_stripe)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield open_harness(client, settings, fake_stripe)


def test_checkout_for_plan_creates_subscription_session(billing: BillingHarness) -> None:
    response = billing.client.post(
        CHECKOUT, json={"plan": "pro"}, headers={**billing.buyer.auth, "Idempotency-Key": "k-1"}
    )
    replay = billing.client.post(
        CHECKOUT, json={"plan": "pro"}, headers={**billing.buyer.auth, "Idempotency-Key": "k-1"}
    )
    body = response.json()
    sent = billing.fake.requests_to("POST", "/v1/checkout/sessions")[-1]
    price = billing.fake.get("prices", sent.params["line_items"][0]["price"])

    assert response.status_code == 200
    assert body["url"] == f"https://checkout.stripe.com/c/pay/{body['id']}"
    assert replay.json()["id"] == body["id"]
    assert sent.idempotency_key is not None
    assert sent.idempotency_key.startswith(f"visioncraft-checkout-{billing.buyer.account_id}-")
    assert sent.params["mode"] == "subscription"
    assert sent.params["client_reference_id"] == billing.buyer.account_id
    assert sent.params["success_url"] == f"{BASE}/dashboard?checkout=success"
    assert sent.params["cancel_url"] == f"{BASE}/dashboard?checkout=cancelled"
    assert sent.params["subscription_data"]["metadata"] == {
        "account_id": billing.buyer.account_id,
        "kind": "plan",
        "plan": "pro",
    }
    assert (price["lookup_key"], price["unit_amount"], price["currency"]) == (
        "visioncraft_plan_pro",
        2980,
        "jpy",
    )
    assert price["tax_behavior"] == "inclusive"
    assert price["recurring"] == {"interval": "month", "interval_count": 1}


def test_checkout_for_pack_creates_payment_session(billing: BillingHarness) -> None:
    session = billing.checkout(pack="medium", success_url=f"{BASE}/dashboard?bought=1")

    assert session["mode"] == "payment"
    assert session["amount_total"] == 2000
    assert session["success_url"] == f"{BASE}/dashboard?bought=1"
    assert session["invoice_creation"] == {"enabled": True}
    assert session["metadata"]["credits"] == "500"
    assert billing.fake.get("customers", session["customer"])["email"].startswith("buyer-")


def test_second_checkout_reuses_customer(billing: BillingHarness) -> None:
    first = billing.checkout(pack="small")
    second = billing.checkout(pack="large")

    created = [
        request
        for request in billing.fake.requests_to("POST", "/v1/customers")
        if request.params["metadata"]["account_id"] == billing.buyer.account_id
    ]

    assert first["customer"] == second["customer"]
    assert len(created) == 1


BAD_CHECKOUTS: list[tuple[dict[str, Any], int, str]] = [
    ({"plan": "pro", "pack": "small"}, 422, "validation_error"),
    ({}, 422, "validation_error"),
    ({"plan": "free"}, 422, "plan_not_for_sale"),
    ({"plan": "gold"}, 404, "plan_not_found"),
    ({"pack": "huge"}, 404, "pack_not_found"),
    ({"pack": "small", "success_url": "https://evil.example/x"}, 422, "invalid_redirect_url"),
    ({"pack": "small", "cancel_url": f"{BASE}@evil.example/"}, 422, "invalid_redirect_url"),
]


def test_checkout_rejects_bad_requests(billing: BillingHarness) -> None:
    answers = [
        billing.client.post(CHECKOUT, json=body, headers=billing.buyer.auth)
        for body, _, _ in BAD_CHECKOUTS
    ]

    assert [(answer.status_code, answer.json()["code"]) for answer in answers] == [
        (status, code) for _, status, code in BAD_CHECKOUTS
    ]
    assert not [
        request
        for request in billing.fake.requests_to("POST", "/v1/checkout/sessions")
        if request.params.get("client_reference_id") == billing.buyer.account_id
    ]


def test_second_subscription_is_refused(billing: BillingHarness) -> None:
    _, _, invoice = billing.subscribe("pro")
    billing.deliver(event("invoice.paid", invoice))

    response = billing.client.post(
        CHECKOUT, json={"plan": "enterprise"}, headers=billing.buyer.auth
    )

    assert response.status_code == 409
    assert response.json()["code"] == "subscription_exists"


def test_checkout_refused_when_price_out_of_sync(billing: BillingHarness) -> None:
    async def raise_price(services: Services) -> None:
        async with services.sessions.begin() as session:
            await session.execute(
                update(CreditPack).where(CreditPack.name == "small").values(price=700)
            )

    with_services(billing.settings, raise_price)
    refused = billing.client.post(CHECKOUT, json={"pack": "small"}, headers=billing.buyer.auth)
    lines = with_services(billing.settings, sync_stripe)
    session = billing.checkout(pack="small")

    assert refused.status_code == 503
    assert refused.json()["code"] == "billing_catalog_not_synced"
    assert any(line.startswith("pack small: replaced ") for line in lines)
    assert session["amount_total"] == 700


def test_portal_answers_url_for_customer(billing: BillingHarness) -> None:
    response = billing.client.post(PORTAL, headers=billing.buyer.auth)
    custom = billing.client.post(
        PORTAL, json={"return_url": f"{BASE}/account"}, headers=billing.buyer.auth
    )
    sent = billing.fake.requests_to("POST", "/v1/billing_portal/sessions")

    assert response.status_code == 200
    assert response.json()["url"].startswith("https://billing.stripe.com/p/session/")
    assert [request.params["return_url"] for request in sent] == [
        f"{BASE}/dashboard",
        f"{BASE}/account",
    ]
    assert custom.status_code == 200


def test_stripe_failure_answers_503(billing: BillingHarness) -> None:
    billing.fake.fail_next("/v1/billing_portal/sessions", 500)

    response = billing.client.post(PORTAL, headers=billing.buyer.auth)

    assert response.status_code == 503
    assert response.json()["code"] == "billing_unavailable"


def test_admin_revenue_counts_payments(billing: BillingHarness) -> None:
    _, _, invoice = billing.subscribe("pro")
    billing.deliver(event("invoice.paid", invoice))
    pack = billing.pay_pack("small")
    billing.deliver(event("checkout.session.completed", pack))
    billing.deliver(refund_event(charge_object(pack, amount_refunded=0), amount_refunded=200))
    admin = create_key(billing.settings, scopes=["admin"])

    response = billing.client.get("/api/v1/admin/revenue", headers=bearer(admin))
    forbidden = billing.client.get("/api/v1/admin/revenue", headers=billing.buyer.auth)
    body = response.json()
    today = datetime.now(UTC).date().isoformat()

    assert response.status_code == 200
    assert forbidden.status_code == 403
    assert (body["currency"], body["mrr"], body["to"]) == ("jpy", 2980, today)
    assert body["mrr_by_plan"] == [{"plan": "pro", "subscriptions": 1, "mrr": 2980}]
    assert body["subscriptions"] == {"active": 1, "past_due": 0}
    assert len(body["data"]) == 30
    assert body["data"][-1] == {
        "date": today,
        "payments": 2,
        "failed_payments": 0,
        "packs_sold": 1,
        "refunds": 1,
        "revenue": 3480,
        "refunded": 200,
    }


def test_billing_routes_answer_503_when_not_configured(
    client: TestClient, settings: Settings
) -> None:
    _, token = create_account_key(settings, "ann@example.com")

    checkout = client.post(CHECKOUT, json={"pack": "small"}, headers=bearer(token))
    portal = client.post(PORTAL, headers=bearer(token))
    status = client.get("/api/v1/billing/subscription", headers=bearer(token))

    for response in (checkout, portal):
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "billing_not_configured"
        assert response.json()["missing_settings"] == [
            "VISIONCRAFT_STRIPE_SECRET_KEY",
            "VISIONCRAFT_STRIPE_WEBHOOK_SECRET",
        ]
    assert status.json() == {
        "object": "subscription",
        "billing_configured": False,
        "plan": "free",
        "status": "none",
        "cancel_at_period_end": False,
        "current_period_end": None,
    }


def test_health_check_reports_billing(
    billing: BillingHarness, settings: Settings, fake_stripe: FakeStripeAPI
) -> None:
    billing.deliver(event("checkout.session.completed", billing.pay_pack("small")))

    async def check(services: Services) -> tuple[Any, Any, Any]:
        unused = await check_billing(services.billing)
        await services.billing.portal(billing.buyer.account_id, return_url=None)
        passed = await check_billing(services.billing)
        fake_stripe.fail_next("/v1/billing_portal/sessions", 401)
        with pytest.raises(BillingUnavailableError, match="key was rejected"):
            await services.billing.portal(billing.buyer.account_id, return_url=None)
        failed = await check_billing(services.billing)
        return unused, passed, failed

    unused, passed, failed = with_services(billing.settings, check)
    off = asyncio.run(_check_unconfigured(settings))

    assert (unused.status, unused.observed["last_api_call_outcome"]) == ("pass", None)
    assert passed.status == "pass"
    assert passed.observed["last_api_call_outcome"] == "success"
    assert 0 <= passed.observed["last_webhook_age_s"] < 60
    assert (failed.status, failed.observed["last_api_call_outcome"]) == (
        "fail",
        "AuthenticationError",
    )
    assert off.status == "warn"
    assert off.observed == {"configured": False}
    assert "VISIONCRAFT_STRIPE_SECRET_KEY" in off.output


async def _check_unconfigured(settings: Settings) -> Any:
    from app.container import build_services

    services = build_services(settings)
    try:
        return await check_billing(services.billing)
    finally:
        await services.aclose()


def test_stripe_calls_get_client_spans(fake_stripe: FakeStripeAPI) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def call() -> None:
        gateway = StripeGateway(
            TEST_SECRET_KEY, tracer_provider=provider, api_base=fake_stripe.base_url
        )
        try:
            with provider.get_tracer("test").start_as_current_span("request"):
                await gateway.prices_by_lookup_key(["visioncraft_pack_small"])
        finally:
            await gateway.aclose()

    asyncio.run(call())
    client_span, parent = exporter.get_finished_spans()

    assert client_span.kind is SpanKind.CLIENT
    assert client_span.parent is not None
    assert client_span.parent.span_id == parent.context.span_id
    assert client_span.attributes is not None
    assert client_span.attributes["url.full"] == f"{fake_stripe.base_url}/v1/prices"
    assert client_span.attributes["http.response.status_code"] == 200
    assert TEST_SECRET_KEY not in str(client_span.to_json())


def run_cli(data_dir: Path, fake: FakeStripeAPI, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with the Stripe API key only, as the README's set-up order has it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VISIONCRAFT_")}
    env.update(
        VISIONCRAFT_DATA_DIR=str(data_dir),
        VISIONCRAFT_STRIPE_SECRET_KEY=TEST_SECRET_KEY,
        VISIONCRAFT_STRIPE_API_BASE=fake.base_url,
    )
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_stripe_sync_twice_duplicates_nothing(tmp_path: Path) -> None:
    with FakeStripeAPI() as fake:
        first = run_cli(tmp_path, fake, "stripe", "sync")
        prices_after_first = fake.active_prices()
        second = run_cli(tmp_path, fake, "stripe", "sync")

        assert first.returncode == 0, first.stderr
        assert second.returncode == 0, second.stderr
        assert "plan pro: created " in first.stdout
        assert "Stripe is in sync: 5 of 5 prices changed." in first.stdout
        assert "Stripe is in sync: 0 of 5 prices changed." in second.stdout
        assert fake.active_prices() == prices_after_first
        assert sorted(price["lookup_key"] for price in prices_after_first) == [
            "visioncraft_pack_large",
            "visioncraft_pack_medium",
            "visioncraft_pack_small",
            "visioncraft_plan_enterprise",
            "visioncraft_plan_pro",
        ]
        assert sorted(fake.objects["products"]) == [
            "visioncraft_pack_large",
            "visioncraft_pack_medium",
            "visioncraft_pack_small",
            "visioncraft_plan_enterprise",
            "visioncraft_plan_pro",
        ]
        assert TEST_SECRET_KEY not in first.stdout + first.stderr


def test_stripe_sync_without_keys_names_settings(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VISIONCRAFT_")}
    env["VISIONCRAFT_DATA_DIR"] = str(tmp_path)

    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "stripe", "sync"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )

    assert result.returncode == 1
    assert "VISIONCRAFT_STRIPE_SECRET_KEY" in result.stderr
