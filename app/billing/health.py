"""The billing health check: is billing configured, does Stripe respond, do webhooks arrive.

It returns a plain result in the shape of the draft IETF health check format (status `pass`,
`warn` or `fail`, observed values and an output sentence), for the app's health checker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.billing.service import BillingService

# Failures that an operator must fix; any other failed call may pass on its own.
KEY_REJECTED_OUTCOMES = frozenset({"AuthenticationError", "PermissionError"})


@dataclass(frozen=True)
class HealthResult:
    status: str  # `pass`, `warn` or `fail`
    output: str
    observed: dict[str, str | float | bool | None] = field(default_factory=dict)


async def check_billing(billing: BillingService, *, now: datetime | None = None) -> HealthResult:
    """Check billing: warn when it is off or the last Stripe call failed, fail on a bad key.

    Observed: the outcome and age in seconds of this process's last Stripe API call, and the
    age in seconds of the newest verified webhook that any replica received.
    """
    if not billing.is_configured or billing.gateway is None:
        return HealthResult(
            "warn",
            f"Billing is off: set {' and '.join(billing.missing_settings)}.",
            {"configured": False},
        )
    now = now or datetime.now(UTC)
    gateway = billing.gateway
    last_webhook_at = await billing.last_webhook_at()
    observed: dict[str, str | float | bool | None] = {
        "configured": True,
        "last_api_call_outcome": gateway.last_call_outcome,
        "last_api_call_age_s": _age_s(gateway.last_call_at, now),
        "last_webhook_age_s": _age_s(last_webhook_at, now),
    }
    outcome = gateway.last_call_outcome
    if outcome in KEY_REJECTED_OUTCOMES:
        return HealthResult(
            "fail", "Stripe rejected VISIONCRAFT_STRIPE_SECRET_KEY on the last call.", observed
        )
    if outcome not in (None, "success"):
        return HealthResult("warn", f"The last Stripe API call failed ({outcome}).", observed)
    return HealthResult(
        "pass", "Billing is configured and the last Stripe call succeeded.", observed
    )


def _age_s(moment: datetime | None, now: datetime) -> float | None:
    return round((now - moment).total_seconds(), 3) if moment is not None else None
