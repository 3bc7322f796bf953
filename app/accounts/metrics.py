"""Metrics of credits, limits and upstream spend, made from the app's MeterProvider.

Names follow OpenTelemetry's style (dotted, unit in UCUM braces). With the no-op provider
that `build_services` uses when none is given, recording costs almost nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation


def utc_day() -> str:
    """Return the current UTC day as YYYYMMDD, the period of the daily spend cap."""
    return time.strftime("%Y%m%d", time.gmtime())


@dataclass(frozen=True)
class DailySpend:
    """The estimated upstream spend of one UTC day (YYYYMMDD) in US dollars."""

    day: str
    usd: float


class AccountMetrics:
    """Counters for the credit ledger, for refused requests and for upstream spend.

    Two gauges let an alert compare the day's spend with its cap: the cap itself, and the
    spend of the current UTC day that the cap counts. That spend is shared by every replica
    (in Redis when REDIS_URL is set), so each replica reports the total as it last counted it;
    aggregate with `max`.
    """

    def __init__(self, meter_provider: MeterProvider, *, daily_spend_cap_usd: float = 0.0) -> None:
        meter = meter_provider.get_meter(__name__)
        self._daily_spend_cap_usd = daily_spend_cap_usd
        self._spend_today = DailySpend(day="", usd=0.0)
        self.credits_granted = meter.create_counter(
            "visioncraft.credits.granted",
            unit="{credit}",
            description="Credits added to balances, by kind (grant, allowance, pack_purchase).",
        )
        self.credits_reserved = meter.create_counter(
            "visioncraft.credits.reserved",
            unit="{credit}",
            description="Credits held for generations before the backend is called.",
        )
        self.credits_used = meter.create_counter(
            "visioncraft.credits.used",
            unit="{credit}",
            description="Credits spent on stored images.",
        )
        self.credits_refunded = meter.create_counter(
            "visioncraft.credits.refunded",
            unit="{credit}",
            description="Reserved credits given back, by reason (failure, blocked, stale).",
        )
        self.credits_expired = meter.create_counter(
            "visioncraft.credits.expired",
            unit="{credit}",
            description="Allowance credits that expired at the end of their cycle.",
        )
        self.credits_taken_back = meter.create_counter(
            "visioncraft.credits.taken_back",
            unit="{credit}",
            description="Purchased credits taken back because a credit pack's payment was refunded.",
        )
        self.credits_shortfall = meter.create_counter(
            "visioncraft.credits.shortfall",
            unit="{credit}",
            description="Credits a pack refund could not take back because they were spent.",
        )
        self.rejections = meter.create_counter(
            "visioncraft.api.rejections",
            unit="{response}",
            description="402, 429 and 503 answers, by status code and error code.",
        )
        self.upstream_spend = meter.create_counter(
            "visioncraft.upstream.spend",
            unit="{USD}",
            description="Estimated upstream cost of paid-backend generations that were started.",
        )
        meter.create_observable_gauge(
            "visioncraft.upstream.spend.cap",
            callbacks=[self._observe_spend_cap],
            unit="{USD}",
            description="DAILY_SPEND_CAP_USD: the cap on estimated upstream spend per UTC day; "
            "0 means no cap.",
        )
        meter.create_observable_gauge(
            "visioncraft.upstream.spend.today",
            callbacks=[self._observe_spend_today],
            unit="{USD}",
            description="Estimated upstream spend of the current UTC day that the daily cap "
            "counts, across replicas; reported only while a cap is set.",
        )

    def record_rejection(self, status: int, code: str) -> None:
        self.rejections.add(1, {"http.response.status_code": status, "error.code": code})

    def record_spend_today(self, spend: DailySpend) -> None:
        """Keep the day's spend as the cap counted it, unless a later or larger one is kept.

        The day's total only grows, so a lower value comes from generations that recorded out
        of order, or from a limit store that failed open (it then returns 0).
        """
        current = self._spend_today
        if spend.day > current.day or (spend.day == current.day and spend.usd > current.usd):
            self._spend_today = spend

    def _observe_spend_cap(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._daily_spend_cap_usd)]

    def _observe_spend_today(self, _options: CallbackOptions) -> Iterable[Observation]:
        # Without a cap nothing counts the shared total, so there is no honest value to report.
        if self._daily_spend_cap_usd <= 0:
            return []
        spend = self._spend_today
        return [Observation(spend.usd if spend.day == utc_day() else 0.0)]
