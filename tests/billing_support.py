"""A running app with billing on, against the fake Stripe API, and what its tests share."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from conftest import bearer, create_account_key, make_settings

from app.billing.catalog import is_sellable_plan, pack_item, plan_item, sync_catalog
from app.container import Services, build_services
from app.settings import Settings
from fakes.stripe_api import (
    TEST_SECRET_KEY,
    TEST_WEBHOOK_SECRET,
    FakeStripeAPI,
    SignedDelivery,
    charge_object,
    event,
    invoice_object,
    new_id,
    sign,
    subscription_object,
)

WEBHOOK = "/api/v1/billing/webhook"
CHECKOUT = "/api/v1/billing/checkout"
DAY_S = 24 * 3600
T = TypeVar("T")


def billing_settings(tmp_path: Path, fake: FakeStripeAPI, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "stripe_secret_key": TEST_SECRET_KEY,
        "stripe_webhook_secret": TEST_WEBHOOK_SECRET,
        "stripe_api_base": fake.base_url,
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


def with_services(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    """Run `work` with services of their own on the app's database, outside the app."""

    async def run() -> T:
        services = build_services(settings)
        try:
            return await work(services)
        finally:
            await services.aclose()

    return asyncio.run(run())


async def sync_stripe(services: Services) -> list[str]:
    """Do what `visioncraft stripe sync` does; return its lines."""
    assert services.billing.gateway is not None
    currency = services.settings.currency
    plans = await services.plans.list()
    items = [plan_item(plan, currency) for plan in plans if is_sellable_plan(plan)]
    items += [pack_item(pack, currency) for pack in await services.plans.packs()]
    retired = [plan_item(plan, currency) for plan in plans if not is_sellable_plan(plan)]
    outcomes = await sync_catalog(services.billing.gateway, items, retired)
    return [outcome.describe() for outcome in outcomes]


@dataclass
class Buyer:
    account_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.token)


@dataclass
class BillingHarness:
    """The app in a TestClient with billing on, the fake Stripe API and one buyer."""

    client: httpx.Client  # a TestClient, or a client of a live server
    settings: Settings
    fake: FakeStripeAPI
    buyer: Buyer

    def deliver(self, payload: dict[str, Any], *, times: int = 1) -> list[httpx.Response]:
        delivery = sign(payload)
        return [self.post_signed(delivery) for _ in range(times)]

    def post_signed(self, delivery: SignedDelivery) -> httpx.Response:
        return self.client.post(WEBHOOK, content=delivery.body, headers=delivery.headers)

    def checkout(self, **body: object) -> dict[str, Any]:
        response = self.client.post(CHECKOUT, json=body, headers=self.buyer.auth)
        assert response.status_code == 200, response.text
        session = self.fake.get("checkout/sessions", response.json()["id"])
        return session

    def pay_pack(self, pack: str, *, payment_status: str = "paid") -> dict[str, Any]:
        """Check out a pack and complete its session in the fake as Stripe would."""
        session = self.checkout(pack=pack)
        session.update(
            status="complete", payment_status=payment_status, payment_intent=new_id("pi")
        )
        return self.fake.put("checkout/sessions", session)

    def subscribe(
        self, plan: str, *, status: str = "active", period_days: int = 30, started_days_ago: int = 0
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Check out a plan; return the completed session, its subscription and first invoice.

        The billing period starts `started_days_ago` days ago and lasts `period_days` days.
        """
        session = self.checkout(plan=plan)
        price = self.fake.get("prices", session["line_items"][0]["price"])
        now = int(time.time()) - started_days_ago * DAY_S
        subscription = subscription_object(
            session, price, status=status, period_start=now, period_end=now + period_days * DAY_S
        )
        self.fake.put("subscriptions", subscription)
        session.update(status="complete", payment_status="paid", subscription=subscription["id"])
        self.fake.put("checkout/sessions", session)
        invoice = invoice_object(
            subscription,
            amount=price["unit_amount"],
            period_start=now,
            period_end=now + period_days * DAY_S,
        )
        return session, subscription, invoice

    def set_subscription(self, subscription: dict[str, Any], **changes: Any) -> dict[str, Any]:
        subscription = {**subscription, **changes}
        return self.fake.put("subscriptions", subscription)

    def account(self) -> dict[str, Any]:
        response = self.client.get("/api/v1/account", headers=self.buyer.auth)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def subscription_status(self) -> dict[str, Any]:
        response = self.client.get("/api/v1/billing/subscription", headers=self.buyer.auth)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def ledger(self) -> list[tuple[str, int, str | None, int | None]]:
        """Return the buyer's ledger, oldest first: kind, amount, reference, shortfall."""

        async def read(services: Services) -> list[tuple[str, int, str | None, int | None]]:
            entries = await services.credits.entries(self.buyer.account_id, limit=1000)
            return [(e.kind, e.amount, e.reference, e.shortfall) for e in reversed(entries)]

        return with_services(self.settings, read)

    def assert_ledger_matches_balances(self) -> None:
        async def read(services: Services) -> None:
            account = await services.accounts.get(self.buyer.account_id)
            allowance, purchased = await services.credits.ledger_totals(account.id)
            assert (allowance, purchased) == (account.allowance_credits, account.purchased_credits)
            assert account.allowance_credits >= 0
            assert account.purchased_credits >= 0

        with_services(self.settings, read)


def open_harness(
    client: httpx.Client, settings: Settings, fake: FakeStripeAPI, *, synced: bool = False
) -> BillingHarness:
    """Create a buyer of its own on the free plan, syncing the catalog into the fake first
    unless it is `synced` already."""
    if not synced:
        with_services(settings, sync_stripe)
    email = f"buyer-{secrets.token_hex(4)}@example.com"
    account_id, token = create_account_key(settings, email)
    return BillingHarness(client, settings, fake, Buyer(account_id, token))


def refund_event(charge: dict[str, Any], *, amount_refunded: int) -> dict[str, Any]:
    """A `charge.refunded` event of `charge` with `amount_refunded` refunded so far."""
    refunded = {**charge, "amount_refunded": amount_refunded}
    refunded["refunded"] = amount_refunded >= charge["amount"]
    return event("charge.refunded", refunded)


__all__ = ["BillingHarness", "charge_object", "event", "invoice_object", "open_harness"]
