"""Metrics of credits, limits and upstream spend, made from the app's MeterProvider.

Names follow OpenTelemetry's style (dotted, unit in UCUM braces). With the no-op provider
that `build_services` uses when none is given, recording costs almost nothing.
"""

from __future__ import annotations

from opentelemetry.metrics import MeterProvider


class AccountMetrics:
    """Counters for the credit ledger, for refused requests and for upstream spend."""

    def __init__(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter(__name__)
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

    def record_rejection(self, status: int, code: str) -> None:
        self.rejections.add(1, {"http.response.status_code": status, "error.code": code})
