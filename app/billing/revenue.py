"""Revenue figures from the billing tables: MRR, subscriptions by status, payments per UTC day."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.usage import as_date, check_range, days_between, utc_day
from app.billing.metrics import SubscriptionFigures
from app.storage.tables import BillingPayment, BillingSubscription

# Subscriptions that still bill, so they count towards MRR: `past_due` ones too, because
# Stripe keeps retrying their payment until the subscription is canceled.
BILLING_STATUSES = ("active", "trialing", "past_due")


@dataclass(frozen=True)
class RevenueDay:
    """One UTC day of payments. Amounts are in the smallest unit of CURRENCY, tax included."""

    day: date
    payments: int = 0
    failed_payments: int = 0
    packs_sold: int = 0
    refunds: int = 0
    revenue: int = 0
    refunded: int = 0


class RevenueService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def subscription_figures(self) -> SubscriptionFigures:
        """Count subscriptions by plan and status, and sum MRR by plan."""
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(
                        BillingSubscription.plan,
                        BillingSubscription.status,
                        func.count(),
                        func.coalesce(func.sum(BillingSubscription.monthly_amount), 0),
                    ).group_by(BillingSubscription.plan, BillingSubscription.status)
                )
            ).all()
        counts: dict[tuple[str, str], int] = {}
        mrr: Counter[str] = Counter()
        for plan, status, count, amount in rows:
            counts[(plan or "unknown", status)] = int(count)
            if status in BILLING_STATUSES and plan is not None:
                mrr[plan] += int(amount)
        return SubscriptionFigures(counts=counts, mrr=dict(mrr))

    async def days(self, start: date, end: date) -> Sequence[RevenueDay]:
        """Return payments, failures, packs sold and refunds for every UTC day from start to end."""
        check_range(start, end)
        async with self._sessions() as session:
            day = utc_day(session, BillingPayment.occurred_at)
            rows = (
                await session.execute(
                    select(
                        day,
                        BillingPayment.kind,
                        BillingPayment.outcome,
                        func.count(),
                        func.coalesce(func.sum(BillingPayment.amount), 0),
                    )
                    .where(
                        BillingPayment.occurred_at >= datetime.combine(start, time(), UTC),
                        BillingPayment.occurred_at
                        < datetime.combine(end + timedelta(days=1), time(), UTC),
                    )
                    .group_by(day, BillingPayment.kind, BillingPayment.outcome)
                )
            ).all()
        totals: dict[date, dict[str, int]] = defaultdict(Counter)
        for raw_day, kind, outcome, count, amount in rows:
            figures = totals[as_date(raw_day)]
            if outcome == "paid":
                figures["payments"] += int(count)
                figures["revenue"] += int(amount)
                if kind == "pack":
                    figures["packs_sold"] += int(count)
            elif outcome == "failed":
                figures["failed_payments"] += int(count)
            elif outcome == "refunded":
                figures["refunds"] += int(count)
                figures["refunded"] += int(amount)
        return [RevenueDay(day=day, **totals.get(day, {})) for day in days_between(start, end)]
