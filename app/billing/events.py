"""Stripe webhook events: each stored once by id, then processed once, in one transaction.

Stripe delivers an event at least once, in any order, sometimes many times and at the same
moment. So:

1. A verified event is inserted into `stripe_events` first; a second delivery finds the row
   and is acknowledged without processing, unless the first attempt failed.
2. Processing runs in one transaction that starts by claiming the event row (an update that
   only succeeds while the event is not processed yet). A concurrent delivery of the same event
   waits for that row and then finds it processed.
3. Every effect is also unique on a business key: a pack grant on its checkout session, an
   allowance on its invoice, a refund on its charge. The rows they change (subscription, pack
   purchase, account) are locked in that order, so concurrent events of one customer queue.
4. Order does not matter: subscriptions are re-read from Stripe while their row is locked,
   pack states only move forward (pending, then paid or failed, then refunded), and refunds
   compare the cumulative amount refunded.

A failure rolls the transaction back, marks the event `failed` and returns 503, so Stripe
delivers it again later.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.credits import (
    AllowanceChange,
    TakeBack,
    add_purchased,
    lock_account,
    renew_paid_allowance,
    restart_cycle,
    take_back_purchased,
)
from app.accounts.metrics import AccountMetrics
from app.accounts.plans import PlanCatalog
from app.accounts.service import DEFAULT_PLAN
from app.billing.catalog import item_name_of
from app.billing.gateway import StripeGateway
from app.billing.metrics import BillingMetrics
from app.billing.revenue import BILLING_STATUSES, RevenueService
from app.errors import BillingUnavailableError, ServiceError
from app.storage.database import insert_if_absent
from app.storage.ids import is_valid_id
from app.storage.tables import (
    Account,
    BillingPayment,
    BillingSubscription,
    PackPurchase,
    StripeEvent,
    utc_now,
)

logger = logging.getLogger(__name__)

# Subscriptions in these statuses are over: their plan no longer applies.
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})
# Checkout sets `paid` once the money is there, and `no_payment_required` on a free session.
PAID_STATUSES = frozenset({"paid", "no_payment_required"})
MONTHS_PER_INTERVAL = {"day": 12 / 365, "week": 12 / 52, "month": 1.0, "year": 12.0}
MAX_ERROR_CHARS = 300

Handler = Callable[[AsyncSession, dict[str, Any], "Effects"], Awaitable[None]]


class EventOutcome(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


class RetryLaterError(Exception):
    """The event cannot be processed yet (it names an account we do not know of yet)."""


@dataclass
class Effects:
    """Changes made by one transaction, recorded in metrics only after it commits."""

    payments: list[tuple[str, str, int]] = field(default_factory=list)  # kind, outcome, amount
    packs_sold: list[str] = field(default_factory=list)
    refunds: list[tuple[str, int]] = field(default_factory=list)  # kind, amount
    pack_credits: int = 0
    allowances: list[AllowanceChange] = field(default_factory=list)
    take_backs: list[TakeBack] = field(default_factory=list)

    def record(self, billing: BillingMetrics, accounts: AccountMetrics) -> None:
        for kind, outcome, amount in self.payments:
            billing.payments.add(1, {"kind": kind, "outcome": outcome})
            if outcome == "paid":
                billing.revenue.add(amount, {"kind": kind})
        for pack in self.packs_sold:
            billing.packs_sold.add(1, {"pack": pack})
        for kind, amount in self.refunds:
            billing.refunds.add(amount, {"kind": kind})
        if self.pack_credits:
            accounts.credits_granted.add(self.pack_credits, {"kind": "pack_purchase"})
        for change in self.allowances:
            if change.expired:
                accounts.credits_expired.add(change.expired)
            if change.granted:
                accounts.credits_granted.add(change.granted, {"kind": "allowance"})
        for take_back in self.take_backs:
            accounts.credits_taken_back.add(take_back.taken)
            if take_back.shortfall:
                accounts.credits_shortfall.add(take_back.shortfall)


@dataclass(frozen=True)
class SubscriptionState:
    """A subscription as Stripe returned it, reduced to what billing keeps."""

    status: str
    customer_id: str | None
    account_hint: str | None
    plan: str | None
    cancel_at_period_end: bool
    period_start: datetime | None
    period_end: datetime | None
    monthly_amount: int
    currency: str | None

    @classmethod
    def read(cls, subscription: dict[str, Any]) -> SubscriptionState:
        # Since API version 2025-03-31 the billing period is on the subscription items.
        items = (subscription.get("items") or {}).get("data") or []
        item = next(
            (entry for entry in items if item_name_of(entry.get("price") or {}, "plan")),
            items[0] if items else {},
        )
        price = item.get("price") or {}
        return cls(
            status=str(subscription.get("status") or "incomplete"),
            customer_id=id_of(subscription.get("customer")),
            account_hint=(subscription.get("metadata") or {}).get("account_id"),
            plan=item_name_of(price, "plan"),
            cancel_at_period_end=bool(subscription.get("cancel_at_period_end")),
            period_start=timestamp(item.get("current_period_start")),
            period_end=timestamp(item.get("current_period_end")),
            monthly_amount=monthly_amount(price, int(item.get("quantity") or 1)),
            currency=price.get("currency"),
        )


def id_of(value: Any) -> str | None:
    """Return the id of an expandable field: the id itself, or the expanded object's id."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) else None


def monthly_amount(price: dict[str, Any], quantity: int) -> int:
    """Return what a recurring price earns per month, in the smallest currency unit."""
    recurring = price.get("recurring") or {}
    months = MONTHS_PER_INTERVAL.get(recurring.get("interval", "month"), 1.0)
    amount = int(price.get("unit_amount") or 0) * quantity
    return round(amount / (months * int(recurring.get("interval_count") or 1)))


def invoice_subscription(invoice: dict[str, Any]) -> str | None:
    """Return the subscription that an invoice bills, or None for a one-time invoice."""
    # Since API version 2025-03-31 the subscription is under `parent.subscription_details`.
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return id_of(details.get("subscription")) or id_of(invoice.get("subscription"))


def invoice_period(invoice: dict[str, Any]) -> tuple[datetime, datetime] | None:
    """Return the service period that an invoice's lines cover: the latest end and its start."""
    periods = [
        (line["period"]["start"], line["period"]["end"])
        for line in (invoice.get("lines") or {}).get("data") or []
        if isinstance((line.get("period") or {}).get("end"), int)
    ]
    if not periods:
        return None
    end = max(period_end for _, period_end in periods)
    start = min(period_start for period_start, period_end in periods if period_end == end)
    return datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)


class EventProcessor:
    """Stores, deduplicates and processes verified Stripe events."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
        plans: PlanCatalog,
        revenue: RevenueService,
        *,
        metrics: BillingMetrics,
        account_metrics: AccountMetrics,
        currency: str,
    ) -> None:
        self._sessions = sessions
        self._gateway = gateway
        self._plans = plans
        self._revenue = revenue
        self._metrics = metrics
        self._account_metrics = account_metrics
        self._currency = currency
        self._handlers: dict[str, Handler] = {
            "checkout.session.completed": self._on_checkout_session,
            "checkout.session.async_payment_succeeded": self._on_checkout_session,
            "checkout.session.async_payment_failed": self._on_checkout_session,
            "invoice.paid": self._on_invoice_paid,
            "invoice.payment_failed": self._on_invoice_payment_failed,
            "customer.subscription.created": self._on_subscription,
            "customer.subscription.updated": self._on_subscription,
            "customer.subscription.deleted": self._on_subscription,
            "charge.refunded": self._on_charge_refunded,
        }

    async def process(self, event: dict[str, Any], payload: str) -> EventOutcome:
        """Store the event, then process it unless it was processed before.

        Raises BillingUnavailableError (503) when storing or processing failed, so that Stripe
        delivers the event again.
        """
        handler = self._handlers.get(event["type"])
        stored_status = await self._store(event, payload, handled=handler is not None)
        if stored_status in {"processed", "ignored"}:
            return self._count(event, EventOutcome.DUPLICATE)
        if handler is None:
            return self._count(event, EventOutcome.IGNORED)

        effects = Effects()
        try:
            async with self._sessions.begin() as session:
                if not await self._claim(session, event["id"]):
                    return self._count(event, EventOutcome.DUPLICATE)
                await handler(session, event, effects)
        except Exception as error:  # the webhook boundary: Stripe must retry, never see a 500
            await self._mark_failed(event, error)
            self._metrics.record_event(event["type"], "failed")
            raise BillingUnavailableError(
                f"Processing event {event['id']} failed; it is kept and processed again when "
                "Stripe retries it.",
                code="webhook_processing_failed",
            ) from None
        effects.record(self._metrics, self._account_metrics)
        await self.refresh_figures()
        return self._count(event, EventOutcome.PROCESSED)

    async def refresh_figures(self) -> None:
        """Reread MRR and subscription counts for the gauges."""
        self._metrics.figures = await self._revenue.subscription_figures()

    def _count(self, event: dict[str, Any], outcome: EventOutcome) -> EventOutcome:
        self._metrics.record_event(event["type"], outcome.value)
        return outcome

    async def _store(self, event: dict[str, Any], payload: str, *, handled: bool) -> str | None:
        """Insert the event; return None when it is new, else the status stored before."""
        try:
            async with self._sessions.begin() as session:
                inserted = await insert_if_absent(
                    session,
                    StripeEvent,
                    {
                        "id": event["id"],
                        "type": event["type"],
                        "created_at": timestamp(event["created"]),
                        "livemode": bool(event.get("livemode")),
                        "payload": payload,
                        "status": "received" if handled else "ignored",
                        "received_at": utc_now(),
                    },
                )
                if inserted:
                    return None
                return await session.scalar(
                    select(StripeEvent.status).where(StripeEvent.id == event["id"])
                )
        except SQLAlchemyError as error:
            # The statement's parameters hold the payload, so only the error's class is logged.
            logger.error("storing Stripe event %s failed: %s", event["id"], type(error).__name__)
            raise BillingUnavailableError(
                f"Event {event['id']} could not be stored; Stripe will deliver it again.",
                code="webhook_processing_failed",
            ) from None

    @staticmethod
    async def _claim(session: AsyncSession, event_id: str) -> bool:
        """Mark the event processed in this transaction; False if another delivery did first."""
        result = await session.execute(
            update(StripeEvent)
            .where(StripeEvent.id == event_id, StripeEvent.status.in_(("received", "failed")))
            .values(status="processed", processed_at=utc_now(), attempts=StripeEvent.attempts + 1)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def _mark_failed(self, event: dict[str, Any], error: Exception) -> None:
        reason = describe_failure(error)
        if isinstance(error, RetryLaterError | ServiceError):
            logger.warning(
                "processing Stripe event %s (%s) failed, Stripe will retry it: %s",
                event["id"],
                event["type"],
                reason,
            )
        else:
            logger.error(
                "processing Stripe event %s (%s) failed, Stripe will retry it",
                event["id"],
                event["type"],
                exc_info=error,
            )
        try:
            async with self._sessions.begin() as session:
                await session.execute(
                    update(StripeEvent)
                    .where(StripeEvent.id == event["id"], StripeEvent.status != "processed")
                    .values(status="failed", attempts=StripeEvent.attempts + 1, last_error=reason)
                )
        except SQLAlchemyError as mark_error:  # the event stays `received`, which retries too
            logger.warning(
                "marking Stripe event %s failed did not work: %s",
                event["id"],
                type(mark_error).__name__,
            )

    # Handlers. Each runs inside the event's transaction.

    async def _on_checkout_session(
        self, session: AsyncSession, event: dict[str, Any], effects: Effects
    ) -> None:
        checkout = event["data"]["object"]
        metadata = checkout.get("metadata") or {}
        hint = checkout.get("client_reference_id") or metadata.get("account_id")
        subscription_id = id_of(checkout.get("subscription"))
        account_id: str | None
        if checkout.get("mode") == "subscription" and subscription_id:
            row, _ = await self._sync_subscription(
                session, subscription_id, account_hint=hint, effects=effects
            )
            account_id = row.account_id
        elif checkout.get("mode") == "payment" and metadata.get("kind") == "pack":
            failed = event["type"] == "checkout.session.async_payment_failed"
            purchase = await self._apply_pack_checkout(
                session, checkout, failed=failed, occurred_at=_occurred_at(event), effects=effects
            )
            account_id = purchase.account_id
        else:
            account_id = await self._account_id_for(
                session, hint=hint, customer_id=id_of(checkout.get("customer"))
            )
        customer_id = id_of(checkout.get("customer"))
        if account_id is not None and customer_id is not None:
            await self._link_customer(session, account_id, customer_id)

    async def _on_subscription(
        self, session: AsyncSession, event: dict[str, Any], effects: Effects
    ) -> None:
        subscription = event["data"]["object"]
        hint = (subscription.get("metadata") or {}).get("account_id")
        await self._sync_subscription(
            session, subscription["id"], account_hint=hint, effects=effects
        )

    async def _on_invoice_paid(
        self, session: AsyncSession, event: dict[str, Any], effects: Effects
    ) -> None:
        invoice = event["data"]["object"]
        subscription_id = invoice_subscription(invoice)
        if subscription_id is None:
            return  # a one-time invoice of a credit pack: the checkout events grant the pack
        row, state = await self._sync_subscription(
            session, subscription_id, account_hint=None, effects=effects
        )
        await self._record_payment(
            session,
            effects,
            reference=invoice["id"],
            account_id=row.account_id,
            kind="subscription",
            item=row.plan,
            outcome="paid",
            amount=int(invoice.get("amount_paid") or 0),
            currency=invoice.get("currency"),
            occurred_at=_occurred_at(event),
        )
        if row.plan is None:
            logger.warning(
                "invoice %s pays subscription %s, whose price is none of our plans; "
                "no plan was activated",
                invoice["id"],
                row.id,
            )
            return
        await self._renew_allowance(session, row, state, invoice, effects)

    async def _on_invoice_payment_failed(
        self, session: AsyncSession, event: dict[str, Any], effects: Effects
    ) -> None:
        invoice = event["data"]["object"]
        subscription_id = invoice_subscription(invoice)
        if subscription_id is None:
            return
        row, _ = await self._sync_subscription(
            session, subscription_id, account_hint=None, effects=effects
        )
        await self._record_payment(
            session,
            effects,
            reference=f"{invoice['id']}/attempt-{invoice.get('attempt_count') or 1}",
            account_id=row.account_id,
            kind="subscription",
            item=row.plan,
            outcome="failed",
            amount=int(invoice.get("amount_due") or 0),
            currency=invoice.get("currency"),
            occurred_at=_occurred_at(event),
        )

    async def _on_charge_refunded(
        self, session: AsyncSession, event: dict[str, Any], effects: Effects
    ) -> None:
        charge = event["data"]["object"]
        purchase = await self._pack_of_payment(
            session, id_of(charge.get("payment_intent")), effects
        )
        if purchase is not None:
            account_id: str | None = purchase.account_id
        else:
            account_id = await self._account_id_for(
                session, hint=None, customer_id=id_of(charge.get("customer"))
            )
        kind = "pack" if purchase is not None else "other"

        # One row per charge contains the cumulative amount refunded, so each refund event adds
        # only what is new, in whatever order partial refunds arrive.
        reference = f"{charge['id']}/refund"
        await insert_if_absent(
            session,
            BillingPayment,
            {
                "reference": reference,
                "account_id": account_id,
                "kind": kind,
                "item": purchase.pack if purchase is not None else None,
                "outcome": "refunded",
                "amount": 0,
                "currency": charge.get("currency") or self._currency,
                "occurred_at": _occurred_at(event),
            },
        )
        payment = await session.scalar(
            select(BillingPayment).where(BillingPayment.reference == reference).with_for_update()
        )
        assert payment is not None

        refunded = int(charge.get("amount_refunded") or 0)
        if refunded <= payment.amount:
            return
        effects.refunds.append((kind, refunded - payment.amount))
        payment.amount = refunded
        if purchase is not None:
            await self._take_back_pack(session, purchase, charge["id"], refunded, effects)

    # Steps shared by the handlers.

    async def _sync_subscription(
        self,
        session: AsyncSession,
        subscription_id: str,
        *,
        account_hint: str | None,
        effects: Effects,
    ) -> tuple[BillingSubscription, SubscriptionState]:
        """Lock our row of the subscription, re-read it from Stripe and store Stripe's state.

        The row stays locked until the transaction ends, so events of one subscription apply
        Stripe's state in the order in which it was read. When the subscription has just
        ended, the account goes back to the free plan.

        NOTE: the lock is held during the call to Stripe (up to STRIPE_TIMEOUT_S per attempt).
        On PostgreSQL that delays only events of the same subscription; SQLite has one writer,
        so there every other write waits for the call too.
        """
        await insert_if_absent(
            session,
            BillingSubscription,
            {"id": subscription_id, "currency": self._currency, "status": "incomplete"},
        )
        row = await session.scalar(
            select(BillingSubscription)
            .where(BillingSubscription.id == subscription_id)
            .with_for_update()
        )
        assert row is not None
        state = SubscriptionState.read(await self._gateway.retrieve_subscription(subscription_id))
        if row.account_id is None:
            row.account_id = await self._account_id_for(
                session, hint=state.account_hint or account_hint, customer_id=state.customer_id
            )
        if row.account_id is None:
            raise RetryLaterError(
                f"subscription {subscription_id} belongs to no known account yet (customer "
                f"{state.customer_id})"
            )
        has_just_ended = state.status in ENDED_STATUSES and row.status not in ENDED_STATUSES
        row.customer_id = state.customer_id
        row.plan = state.plan
        row.status = state.status
        row.cancel_at_period_end = state.cancel_at_period_end
        row.current_period_end = state.period_end
        row.monthly_amount = state.monthly_amount
        row.currency = state.currency or self._currency
        row.updated_at = utc_now()
        await session.flush()
        if has_just_ended:
            await self._end_plan(session, row, effects)
        return row, state

    async def _renew_allowance(
        self,
        session: AsyncSession,
        row: BillingSubscription,
        state: SubscriptionState,
        invoice: dict[str, Any],
        effects: Effects,
    ) -> None:
        """Activate the plan and grant its allowance for the invoice's period, once.

        An invoice renews only when its period ends later than the last renewed one, or ends at
        the same time on another plan (a plan change inside a period), and only while the
        period and the subscription last. A plan change grants the new plan's allowance in
        proportion to the part of the period that is left.
        """
        now = utc_now()
        period = invoice_period(invoice) or (now, state.period_end)
        start, end = period
        if end is None or end <= now or row.status in ENDED_STATUSES or row.plan is None:
            return
        last_end = row.allowance_period_end
        is_newer = last_end is None or end > last_end
        is_plan_change = end == last_end and row.plan != row.allowance_plan
        if not (is_newer or is_plan_change):
            return

        plan = await self._plans.get(row.plan)
        credits = plan.monthly_credits
        if invoice.get("billing_reason") == "subscription_update" and state.period_start:
            full_s = (end - state.period_start).total_seconds()
            if full_s > 0:
                credits = math.ceil(credits * min(1.0, (end - now).total_seconds() / full_s))
        account = await lock_account(session, row.account_id or "")
        change = await renew_paid_allowance(
            session,
            account,
            plan,
            credits=credits,
            started_at=start,
            ends_at=end,
            reference=invoice["id"],
            reason=f"{plan.name} plan, invoice {invoice['id']}",
        )
        row.allowance_plan = plan.name
        row.allowance_period_end = end
        effects.allowances.append(change)

    async def _end_plan(
        self, session: AsyncSession, row: BillingSubscription, effects: Effects
    ) -> None:
        """Move the account back to the free plan, unless another subscription still bills."""
        if row.allowance_plan is None or row.account_id is None:
            return  # the plan was never activated
        others = await session.scalar(
            select(func.count()).where(
                BillingSubscription.account_id == row.account_id,
                BillingSubscription.id != row.id,
                BillingSubscription.status.in_(BILLING_STATUSES),
            )
        )
        account = await lock_account(session, row.account_id)
        if others or account.plan != row.allowance_plan:
            return
        free = await self._plans.get(DEFAULT_PLAN)
        change = await restart_cycle(session, account, free, reason=f"subscription {row.id} ended")
        effects.allowances.append(change)

    async def _apply_pack_checkout(
        self,
        session: AsyncSession,
        checkout: dict[str, Any],
        *,
        failed: bool,
        occurred_at: datetime,
        effects: Effects,
    ) -> PackPurchase:
        """Record a pack purchase and grant its credits once the session is paid."""
        metadata = checkout.get("metadata") or {}
        account_id = await self._account_id_for(
            session,
            hint=checkout.get("client_reference_id") or metadata.get("account_id"),
            customer_id=id_of(checkout.get("customer")),
        )
        if account_id is None:
            raise RetryLaterError(f"checkout session {checkout['id']} names no known account")
        await insert_if_absent(
            session,
            PackPurchase,
            {
                "id": checkout["id"],
                "account_id": account_id,
                "pack": metadata["pack"],
                "credits": int(metadata["credits"]),
                "amount": int(checkout.get("amount_total") or 0),
                "currency": checkout.get("currency") or self._currency,
                "payment_intent_id": id_of(checkout.get("payment_intent")),
                "status": "pending",
            },
        )
        purchase = await session.scalar(
            select(PackPurchase).where(PackPurchase.id == checkout["id"]).with_for_update()
        )
        assert purchase is not None
        purchase.payment_intent_id = purchase.payment_intent_id or id_of(
            checkout.get("payment_intent")
        )
        if purchase.status != "pending":
            return purchase  # states only move forward, so a late event changes nothing
        if failed:
            purchase.status = "failed"
            await self._record_pack_payment(
                session, effects, purchase, outcome="failed", occurred_at=occurred_at
            )
            return purchase
        if checkout.get("payment_status") not in PAID_STATUSES:
            return purchase  # an asynchronous method: async_payment_succeeded grants it later

        account = await lock_account(session, purchase.account_id)
        await add_purchased(
            session,
            account,
            purchase.credits,
            reference=purchase.id,
            reason=f"{purchase.pack} credit pack, checkout {purchase.id}",
        )
        purchase.status = "paid"
        purchase.updated_at = utc_now()
        effects.pack_credits += purchase.credits
        effects.packs_sold.append(purchase.pack)
        await self._record_pack_payment(
            session, effects, purchase, outcome="paid", occurred_at=occurred_at
        )
        return purchase

    async def _record_pack_payment(
        self,
        session: AsyncSession,
        effects: Effects,
        purchase: PackPurchase,
        *,
        outcome: str,
        occurred_at: datetime,
    ) -> None:
        """Record the pack's payment or failed payment, once per checkout session."""
        await self._record_payment(
            session,
            effects,
            reference=purchase.id if outcome == "paid" else f"{purchase.id}/{outcome}",
            account_id=purchase.account_id,
            kind="pack",
            item=purchase.pack,
            outcome=outcome,
            amount=purchase.amount,
            currency=purchase.currency,
            occurred_at=occurred_at,
        )

    async def _pack_of_payment(
        self, session: AsyncSession, payment_intent_id: str | None, effects: Effects
    ) -> PackPurchase | None:
        """Return the locked pack purchase paid by the payment intent, or None for no pack.

        A refund may arrive before the checkout events: then the Checkout Session is read
        from Stripe and applied first, so the pack is granted before it is taken back.
        """
        if payment_intent_id is None:
            return None
        purchase = await session.scalar(
            select(PackPurchase)
            .where(PackPurchase.payment_intent_id == payment_intent_id)
            .with_for_update()
        )
        if purchase is not None and purchase.status != "pending":
            return purchase
        for checkout in await self._gateway.checkout_sessions_of_payment(payment_intent_id):
            if (checkout.get("metadata") or {}).get("kind") == "pack":
                return await self._apply_pack_checkout(
                    session,
                    checkout,
                    failed=False,
                    occurred_at=timestamp(checkout.get("created")) or utc_now(),
                    effects=effects,
                )
        return purchase

    async def _take_back_pack(
        self,
        session: AsyncSession,
        purchase: PackPurchase,
        charge_id: str,
        refunded: int,
        effects: Effects,
    ) -> None:
        """Take back the pack's credits in proportion to the amount refunded so far."""
        if purchase.status != "paid" and purchase.status != "refunded":
            return
        if purchase.amount <= 0 or refunded >= purchase.amount:
            target = purchase.credits
        else:
            target = purchase.credits * refunded // purchase.amount
        wanted = target - purchase.credits_taken_back - purchase.credits_short

        purchase.status = "refunded"
        purchase.refunded_amount = max(purchase.refunded_amount, refunded)
        purchase.updated_at = utc_now()
        if wanted <= 0:
            return
        account = await lock_account(session, purchase.account_id)
        result = await take_back_purchased(
            session,
            account,
            wanted,
            reference=f"{charge_id}/refund/{refunded}",
            reason=f"refund of the {purchase.pack} credit pack, checkout {purchase.id}",
        )
        purchase.credits_taken_back += result.taken
        purchase.credits_short += result.shortfall
        effects.take_backs.append(result)
        if result.shortfall:
            logger.warning(
                "a refund of checkout %s took back %s of %s credits from account %s; "
                "the other %s were already spent",
                purchase.id,
                result.taken,
                wanted,
                purchase.account_id,
                result.shortfall,
            )

    async def _record_payment(
        self,
        session: AsyncSession,
        effects: Effects,
        *,
        reference: str,
        account_id: str | None,
        kind: str,
        item: str | None,
        outcome: str,
        amount: int,
        currency: str | None,
        occurred_at: datetime,
    ) -> None:
        inserted = await insert_if_absent(
            session,
            BillingPayment,
            {
                "reference": reference,
                "account_id": account_id,
                "kind": kind,
                "item": item,
                "outcome": outcome,
                "amount": amount,
                "currency": currency or self._currency,
                "occurred_at": occurred_at,
            },
        )
        if inserted:
            effects.payments.append((kind, outcome, amount))

    @staticmethod
    async def _account_id_for(
        session: AsyncSession, *, hint: str | None, customer_id: str | None
    ) -> str | None:
        """Find the account by the id we sent to Stripe, else by its linked Stripe customer."""
        if hint and is_valid_id(hint, "acct"):
            found = await session.scalar(select(Account.id).where(Account.id == hint))
            if found is not None:
                return found
        if customer_id is None:
            return None
        return await session.scalar(
            select(Account.id).where(Account.stripe_customer_id == customer_id)
        )

    @staticmethod
    async def _link_customer(session: AsyncSession, account_id: str, customer_id: str) -> None:
        """Link the Stripe customer to the account unless either is linked already."""
        owner = await session.scalar(
            select(Account.id).where(Account.stripe_customer_id == customer_id)
        )
        if owner == account_id:
            return
        if owner is not None:
            logger.warning(
                "Stripe customer %s pays for account %s already; not linked to account %s",
                customer_id,
                owner,
                account_id,
            )
            return
        result = await session.execute(
            update(Account)
            .where(Account.id == account_id, Account.stripe_customer_id.is_(None))
            .values(stripe_customer_id=customer_id)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            logger.warning(
                "account %s has another Stripe customer; %s was not linked",
                account_id,
                customer_id,
            )


def _occurred_at(event: dict[str, Any]) -> datetime:
    return timestamp(event.get("created")) or utc_now()


def describe_failure(error: Exception) -> str:
    """Describe a processing failure for logs and `last_error`, without statement parameters."""
    if isinstance(error, ServiceError):
        text = error.detail
    elif isinstance(error, RetryLaterError):
        text = str(error)
    else:
        text = type(error).__name__
    return text[:MAX_ERROR_CHARS]
