"""Metrics of billing: webhooks, payments, packs, refunds, and MRR and subscriptions as gauges.

Counters count what this process handled. Every event is handled once across all replicas, so
their sum over replicas is exact. The gauges describe the whole database. A metric callback
cannot query the database, so they read a snapshot that the app refreshes every minute and
after each processed event. Every replica reports the same value, so aggregate with `max`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

# Event types that get their own label value; any other type is counted as `other`.
KNOWN_EVENT_TYPES = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "invoice.paid",
        "invoice.payment_failed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "charge.refunded",
    }
)


@dataclass(frozen=True)
class SubscriptionFigures:
    """Subscriptions by plan and status, and monthly recurring revenue by plan."""

    counts: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (plan, status) -> n
    mrr: Mapping[str, int] = field(default_factory=dict)  # plan -> smallest currency unit


class BillingMetrics:
    def __init__(self, meter_provider: MeterProvider, *, currency: str) -> None:
        meter = meter_provider.get_meter(__name__)
        money = f"{{{currency.upper()}}}"
        self.figures = SubscriptionFigures()
        self.webhook_events = meter.create_counter(
            "visioncraft.billing.webhook.events",
            unit="{event}",
            description="Verified Stripe events by type and outcome (processed, duplicate, "
            "ignored, failed).",
        )
        self.webhook_rejections = meter.create_counter(
            "visioncraft.billing.webhook.rejections",
            unit="{request}",
            description="Webhook requests rejected with 400, by reason (missing, malformed, "
            "invalid or stale signature, invalid payload).",
        )
        self.payments = meter.create_counter(
            "visioncraft.billing.payments",
            unit="{payment}",
            description="Payments by kind (subscription, pack) and outcome (paid, failed).",
        )
        self.revenue = meter.create_counter(
            "visioncraft.billing.revenue",
            unit=money,
            description="Amounts paid, tax included, by kind (subscription, pack).",
        )
        self.refunds = meter.create_counter(
            "visioncraft.billing.refunds",
            unit=money,
            description="Amounts refunded, by kind (subscription, pack, other).",
        )
        self.packs_sold = meter.create_counter(
            "visioncraft.billing.packs.sold",
            unit="{pack}",
            description="Credit packs paid for, by pack.",
        )
        meter.create_observable_gauge(
            "visioncraft.billing.mrr",
            callbacks=[self._observe_mrr],
            unit=money,
            description="Monthly recurring revenue of active and past-due subscriptions, by plan.",
        )
        meter.create_observable_gauge(
            "visioncraft.billing.subscriptions",
            callbacks=[self._observe_subscriptions],
            unit="{subscription}",
            description="Subscriptions by plan and Stripe status.",
        )

    def record_event(self, event_type: str, outcome: str) -> None:
        label = event_type if event_type in KNOWN_EVENT_TYPES else "other"
        self.webhook_events.add(1, {"type": label, "outcome": outcome})

    def _observe_mrr(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(amount, {"plan": plan}) for plan, amount in self.figures.mrr.items()]

    def _observe_subscriptions(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"plan": plan, "status": status})
            for (plan, status), count in self.figures.counts.items()
        ]
