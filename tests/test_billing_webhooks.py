"""Stripe webhooks against the real SDK and a fake Stripe API, on SQLite and PostgreSQL.

Every delivery is repeated, several arrive out of order, and one comes from 20 threads at once.
After each case the ledger, the balances and the plan must be exactly right, and no response
may be a 500.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from billing_support import (
    WEBHOOK,
    BillingHarness,
    billing_settings,
    open_harness,
    refund_event,
    sync_stripe,
    with_services,
)
from conftest import LiveServer, free_port
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from app.container import Services
from app.main import create_app
from app.settings import Settings
from app.storage.tables import StripeEvent
from fakes.stripe_api import (
    FakeStripeAPI,
    charge_object,
    event,
    invoice_object,
    sign,
)

REPEATS = 10


@pytest.fixture(scope="module")
def fake_stripe() -> Iterator[FakeStripeAPI]:
    with FakeStripeAPI() as fake:
        yield fake
    assert fake.handler_errors == []


@pytest.fixture(scope="module")
def billing_app(
    module_database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    fake_stripe: FakeStripeAPI,
) -> Iterator[tuple[TestClient, Settings]]:
    """One app with billing on for the module; each test buys as an account of its own."""
    settings = billing_settings(
        tmp_path_factory.mktemp("data"), fake_stripe, database_url=module_database_url
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        with_services(settings, sync_stripe)
        yield client, settings


@pytest.fixture
def billing(billing_app: tuple[TestClient, Settings], fake_stripe: FakeStripeAPI) -> BillingHarness:
    client, settings = billing_app
    return open_harness(client, settings, fake_stripe, synced=True)


def _outcomes(responses: list[httpx.Response]) -> list[str]:
    assert [response.status_code for response in responses] == [200] * len(responses)
    return [response.json()["outcome"] for response in responses]


def _event_row(harness: BillingHarness, event_id: str) -> StripeEvent | None:
    async def read(services: Services) -> StripeEvent | None:
        async with services.sessions() as session:
            return await session.scalar(select(StripeEvent).where(StripeEvent.id == event_id))

    return with_services(harness.settings, read)


def test_pack_checkout_grants_credits_once(billing: BillingHarness) -> None:
    session = billing.pay_pack("small")

    outcomes = _outcomes(
        billing.deliver(event("checkout.session.completed", session), times=REPEATS)
    )

    assert outcomes == ["processed"] + ["duplicate"] * (REPEATS - 1)
    assert billing.account()["balance"] == {
        "allowance": 50,
        "purchased": 100,
        "total": 150,
        "reserved": 0,
    }
    assert billing.ledger()[-1] == ("pack_purchase", 100, session["id"], None)
    billing.assert_ledger_matches_balances()


def test_checkout_completed_links_customer(billing: BillingHarness) -> None:
    session = billing.pay_pack("small")

    billing.deliver(event("checkout.session.completed", session))

    assert session["customer"] is not None
    assert billing.fake.get("customers", session["customer"])["metadata"] == {
        "account_id": billing.buyer.account_id
    }


def test_async_pack_payment_grants_when_it_succeeds(billing: BillingHarness) -> None:
    session = billing.pay_pack("medium", payment_status="unpaid")

    billing.deliver(event("checkout.session.completed", session), times=REPEATS)
    pending = billing.account()["balance"]["purchased"]
    paid = {**session, "payment_status": "paid"}
    outcomes = _outcomes(
        billing.deliver(event("checkout.session.async_payment_succeeded", paid), times=REPEATS)
    )

    assert pending == 0
    assert outcomes.count("processed") == 1
    assert billing.account()["balance"]["purchased"] == 500
    billing.assert_ledger_matches_balances()


def test_async_pack_payment_failure_grants_nothing(billing: BillingHarness) -> None:
    session = billing.pay_pack("small", payment_status="unpaid")

    billing.deliver(event("checkout.session.async_payment_failed", session), times=REPEATS)
    # A late `completed` of the same session must not reopen the failed purchase.
    billing.deliver(event("checkout.session.completed", {**session, "payment_status": "paid"}))

    assert billing.account()["balance"]["purchased"] == 0
    assert [kind for kind, *_ in billing.ledger()] == ["allowance"]


def test_invoice_paid_before_checkout_completed(billing: BillingHarness) -> None:
    session, subscription, invoice = billing.subscribe("pro")
    period_end = subscription["items"]["data"][0]["current_period_end"]

    first = billing.deliver(event("invoice.paid", invoice), times=REPEATS)
    second = billing.deliver(event("customer.subscription.created", subscription), times=REPEATS)
    third = billing.deliver(event("checkout.session.completed", session), times=REPEATS)

    account = billing.account()
    assert [_outcomes(responses).count("processed") for responses in (first, second, third)] == [
        1,
        1,
        1,
    ]
    assert account["plan"]["name"] == "pro"
    assert account["balance"]["allowance"] == 1000
    assert datetime.fromisoformat(account["cycle"]["ends_at"]) == datetime.fromtimestamp(
        period_end, UTC
    )
    assert billing.subscription_status() == {
        "object": "subscription",
        "billing_configured": True,
        "plan": "pro",
        "status": "active",
        "cancel_at_period_end": False,
        "current_period_end": period_end,
    }
    assert [entry for entry in billing.ledger() if entry[2] == invoice["id"]] == [
        ("allowance", 1000, invoice["id"], None)
    ]
    billing.assert_ledger_matches_balances()


def test_subscription_updated_before_created(billing: BillingHarness) -> None:
    _session, subscription, invoice = billing.subscribe("pro")
    billing.deliver(event("invoice.paid", invoice))
    created = event("customer.subscription.created", {**subscription, "status": "incomplete"})
    updated_state = billing.set_subscription(subscription, cancel_at_period_end=True)
    updated = event("customer.subscription.updated", updated_state, created=created["created"] + 5)

    billing.deliver(updated, times=REPEATS)
    billing.deliver(created, times=REPEATS)

    status = billing.subscription_status()
    assert (status["status"], status["cancel_at_period_end"], status["plan"]) == (
        "active",
        True,
        "pro",
    )
    assert billing.account()["plan"]["name"] == "pro"


def test_payment_failure_marks_past_due(billing: BillingHarness) -> None:
    _session, subscription, invoice = billing.subscribe("pro")
    billing.deliver(event("invoice.paid", invoice))
    billing.set_subscription(subscription, status="past_due")
    failed = {**invoice, "id": "in_failed_renewal", "status": "open", "amount_paid": 0}

    billing.deliver(event("invoice.payment_failed", failed), times=REPEATS)

    assert billing.subscription_status()["status"] == "past_due"
    assert billing.account()["plan"]["name"] == "pro"


def test_renewal_invoice_renews_allowance_once(billing: BillingHarness) -> None:
    _session, subscription, invoice = billing.subscribe("pro")
    billing.deliver(event("invoice.paid", invoice))
    spend_credits(billing, 300)
    item = subscription["items"]["data"][0]
    start, end = item["current_period_end"], item["current_period_end"] + 30 * 86400
    renewed = billing.set_subscription(
        subscription,
        items={
            "object": "list",
            "data": [{**item, "current_period_start": start, "current_period_end": end}],
        },
    )
    renewal = invoice_object(
        renewed,
        amount=2980,
        period_start=start,
        period_end=end,
        billing_reason="subscription_cycle",
    )

    billing.deliver(event("invoice.paid", renewal), times=REPEATS)
    billing.deliver(event("invoice.paid", invoice), times=REPEATS)  # the first one, late again

    kinds = [(kind, amount) for kind, amount, *_ in billing.ledger()]
    assert billing.account()["balance"]["allowance"] == 1000
    assert kinds[-2:] == [("expiry", -700), ("allowance", 1000)]
    assert billing.subscription_status()["current_period_end"] == end
    billing.assert_ledger_matches_balances()


def test_subscription_deleted_returns_account_to_free(billing: BillingHarness) -> None:
    _session, subscription, invoice = billing.subscribe("pro")
    billing.deliver(event("invoice.paid", invoice))
    ended = billing.set_subscription(subscription, status="canceled")

    billing.deliver(event("customer.subscription.deleted", ended), times=REPEATS)

    account = billing.account()
    assert account["plan"]["name"] == "free"
    assert account["balance"]["allowance"] == 50
    assert billing.subscription_status()["status"] == "canceled"
    billing.assert_ledger_matches_balances()


def test_refund_after_credits_partly_spent(billing: BillingHarness) -> None:
    session = billing.pay_pack("small")  # 100 credits for 500
    billing.deliver(event("checkout.session.completed", session))
    spend_credits(billing, 120)  # the 50 of the allowance first, then 70 purchased
    charge = charge_object(session, amount_refunded=0)

    billing.deliver(refund_event(charge, amount_refunded=500), times=REPEATS)

    balance = billing.account()["balance"]
    assert (balance["allowance"], balance["purchased"]) == (0, 0)
    assert billing.ledger()[-1] == ("pack_refund", -30, f"{charge['id']}/refund/500", 70)
    billing.assert_ledger_matches_balances()


def test_partial_refunds_out_of_order(billing: BillingHarness) -> None:
    session = billing.pay_pack("medium")  # 500 credits for 2000
    billing.deliver(event("checkout.session.completed", session))
    charge = charge_object(session, amount_refunded=0)

    billing.deliver(refund_event(charge, amount_refunded=1000), times=REPEATS)
    billing.deliver(refund_event(charge, amount_refunded=500), times=REPEATS)
    half = billing.account()["balance"]["purchased"]
    billing.deliver(refund_event(charge, amount_refunded=2000), times=REPEATS)

    assert half == 250
    assert billing.account()["balance"]["purchased"] == 0
    billing.assert_ledger_matches_balances()


def test_refund_before_checkout_event_grants_then_takes_back(billing: BillingHarness) -> None:
    session = billing.pay_pack("small")
    charge = charge_object(session, amount_refunded=0)

    billing.deliver(refund_event(charge, amount_refunded=500), times=REPEATS)
    billing.deliver(event("checkout.session.completed", session), times=REPEATS)

    assert billing.account()["balance"]["purchased"] == 0
    assert [kind for kind, *_ in billing.ledger()] == ["allowance", "pack_purchase", "pack_refund"]


def test_processing_failure_answers_503_then_retry_succeeds(billing: BillingHarness) -> None:
    _session, _subscription, invoice = billing.subscribe("pro")
    paid = event("invoice.paid", invoice)
    billing.fake.fail_next("/v1/subscriptions")

    failed = billing.deliver(paid)[0]
    stored = _event_row(billing, paid["id"])
    retried = billing.deliver(paid)[0]

    assert failed.status_code == 503
    assert failed.json()["code"] == "webhook_processing_failed"
    assert stored is not None and (stored.status, stored.attempts) == ("failed", 1)
    assert retried.json()["outcome"] == "processed"
    assert billing.account()["balance"]["allowance"] == 1000


def test_unknown_event_type_is_acknowledged(billing: BillingHarness) -> None:
    responses = billing.deliver(event("customer.created", {"id": "cus_x", "object": "customer"}))

    assert _outcomes(responses) == ["ignored"]


@pytest.mark.parametrize(
    ("mangle", "code"),
    [
        (lambda body, header: (body, None), "missing_signature"),
        (lambda body, header: (body, "v1=abc"), "malformed_signature"),
        (lambda body, header: (body, header.replace("v1=", "v1=0")), "invalid_signature"),
        (lambda body, header: (body.replace(b"\n", b""), header), "invalid_signature"),
    ],
    ids=["missing", "malformed", "wrong", "reserialised"],
)
def test_rejected_signature_answers_400(
    billing: BillingHarness, caplog: pytest.LogCaptureFixture, mangle: object, code: str
) -> None:
    session = billing.pay_pack("small")
    delivery = sign(event("checkout.session.completed", session))
    body, header = mangle(delivery.body, delivery.signature)  # type: ignore[operator]
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header

    with caplog.at_level(logging.DEBUG):
        response = billing.client.post(WEBHOOK, content=body, headers=headers)

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert billing.account()["balance"]["purchased"] == 0
    assert session["id"] not in caplog.text
    assert delivery.signature not in caplog.text


def test_stale_signature_answers_400(billing: BillingHarness) -> None:
    payload = event("checkout.session.completed", billing.pay_pack("small"))
    delivery = sign(payload, timestamp=int(time.time()) - 301)

    response = billing.post_signed(delivery)

    assert response.status_code == 400
    assert response.json()["code"] == "stale_signature"
    assert _event_row(billing, payload["id"]) is None


def test_same_event_from_twenty_threads(
    database_url: str, tmp_path: Path, fake_stripe: FakeStripeAPI
) -> None:
    settings = billing_settings(tmp_path, fake_stripe, database_url=database_url, port=free_port())
    with LiveServer(settings) as server, httpx.Client(base_url=server.base_url) as client:
        harness = open_harness(client, settings, fake_stripe)
        delivery = sign(event("checkout.session.completed", harness.pay_pack("large")))
        statuses: list[int] = []
        outcomes: list[str] = []
        start = threading.Barrier(20)

        def post() -> None:
            start.wait(timeout=30)
            response = httpx.post(
                f"{server.base_url}{WEBHOOK}",
                content=delivery.body,
                headers=delivery.headers,
                timeout=60,
            )
            statuses.append(response.status_code)
            outcomes.append(response.json().get("outcome", response.json().get("code")))

        threads = [threading.Thread(target=post) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)

        assert statuses == [200] * 20
        assert sorted(outcomes) == ["duplicate"] * 19 + ["processed"]
        assert harness.account()["balance"]["purchased"] == 2000
        harness.assert_ledger_matches_balances()


def test_webhook_without_billing_answers_503(client: TestClient) -> None:
    delivery = sign(event("invoice.paid", {"id": "in_1", "object": "invoice"}))

    response = client.post(WEBHOOK, content=delivery.body, headers=delivery.headers)

    assert response.status_code == 503
    assert response.json()["code"] == "billing_not_configured"
    assert "VISIONCRAFT_STRIPE_SECRET_KEY" in response.json()["detail"]


def spend_credits(harness: BillingHarness, credits: int) -> None:
    """Spend credits as a generation does: reserve them, then turn them into usage."""

    async def spend(services: Services) -> None:
        reservation = await services.credits.reserve(
            harness.buyer.account_id, credits, generation_id="gen_test", api_key_id=None
        )
        assert reservation is not None
        assert await services.credits.use(reservation)

    with_services(harness.settings, spend)


def _samples(harness: BillingHarness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = harness.client.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_billing_metrics_count_events(billing: BillingHarness) -> None:
    _, _, invoice = billing.subscribe("pro")
    rejected = sign(event("invoice.paid", invoice), secret="whsec_other")
    before = _samples(billing)

    billing.deliver(event("invoice.paid", invoice), times=2)
    billing.post_signed(rejected)
    after = _samples(billing)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    paid = {"type": "invoice.paid"}
    assert delta("visioncraft_billing_webhook_events_total", **paid, outcome="processed") == 1
    assert delta("visioncraft_billing_webhook_events_total", **paid, outcome="duplicate") == 1
    assert delta("visioncraft_billing_webhook_rejections_total", reason="invalid_signature") == 1
    assert delta("visioncraft_billing_payments_total", kind="subscription", outcome="paid") == 1
    assert delta("visioncraft_billing_revenue_total", kind="subscription") == 2980
    assert delta("visioncraft_credits_granted_total", kind="allowance") == 1000
    assert after[("visioncraft_billing_mrr", (("plan", "pro"),))] >= 2980
    assert ("visioncraft_billing_subscriptions", (("plan", "pro"), ("status", "active"))) in after


def test_webhook_body_may_exceed_json_limit(billing: BillingHarness) -> None:
    session = billing.pay_pack("small")
    large = event("checkout.session.completed", {**session, "padding": "x" * 100_000})

    response = billing.deliver(large)[0]

    assert response.status_code == 200
    assert billing.account()["balance"]["purchased"] == 100


def test_plan_change_grants_rest_of_period(billing: BillingHarness) -> None:
    _, subscription, invoice = billing.subscribe("pro", started_days_ago=15, period_days=30)
    billing.deliver(event("invoice.paid", invoice))
    item = subscription["items"]["data"][0]
    enterprise = billing.fake.active_prices()
    price = next(p for p in enterprise if p["lookup_key"] == "visioncraft_plan_enterprise")
    changed = billing.set_subscription(
        subscription, items={"object": "list", "data": [{**item, "price": price}]}
    )
    now, end = int(time.time()), item["current_period_end"]
    upgrade = invoice_object(
        changed,
        amount=13410,
        period_start=now,
        period_end=end,
        billing_reason="subscription_update",
    )

    billing.deliver(event("invoice.paid", upgrade), times=REPEATS)

    account = billing.account()
    assert account["plan"]["name"] == "enterprise"
    # Half of the 30-day period is left, so half of enterprise's 15,000 monthly credits.
    assert account["balance"]["allowance"] == 7500
    assert [(kind, amount) for kind, amount, *_ in billing.ledger()][-2:] == [
        ("expiry", -1000),
        ("allowance", 7500),
    ]
    billing.assert_ledger_matches_balances()
