"""The plan prices that the landing page and the product's JSON-LD show."""

from __future__ import annotations

from dataclasses import dataclass

from babel.numbers import format_currency, get_currency_precision

from app.accounts.plans import PlanCatalog


@dataclass(frozen=True)
class PlanPrice:
    """One plan as the pricing section shows it; `price` is tax-inclusive, in `currency`.

    `name` is the display name and `plan` the plan's id, which checkout requests carry.
    """

    plan: str
    name: str
    price: int
    credits: int | None
    currency: str


def format_price(amount: int, locale: str, currency: str) -> str:
    """Format an amount in the smallest unit of `currency`, such as "¥1,000" or "￥1,000".

    Prices are stored in the smallest unit; for zero-decimal currencies such as JPY that is
    the whole amount, and Babel knows how many decimals each currency has.
    """
    digits = _decimal_digits(currency)
    return format_currency(amount / 10**digits, currency.upper(), locale=locale)


def _decimal_digits(currency: str) -> int:
    return int(get_currency_precision(currency.upper()))


async def list_plan_prices(plans: PlanCatalog, currency: str) -> list[PlanPrice]:
    """Return the plans offered to customers, cheapest first."""
    offered = await plans.list(public_only=True)
    return sorted(
        (
            PlanPrice(
                plan=plan.name,
                name=plan.display_name,
                price=plan.price,
                credits=plan.monthly_credits,
                currency=currency.upper(),
            )
            for plan in offered
        ),
        key=lambda plan: plan.price,
    )
