"""The plan prices that the landing page and the product's JSON-LD show."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from babel.numbers import format_currency
from sqlalchemy import MetaData, Table, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

# Prices are integers in the smallest unit of this currency (yen have no decimals).
CURRENCY = "JPY"
PRICE_COLUMNS = ("price", "monthly_price", "price_monthly", "amount")
CREDITS_COLUMNS = ("credits", "monthly_credits", "credits_per_month", "included_credits")


@dataclass(frozen=True)
class PlanPrice:
    """One plan as the pricing section shows it; `price` is tax-inclusive, in yen."""

    name: str
    price: int
    credits: int | None


def format_price(amount: int, locale: str) -> str:
    """Format a yen amount for `locale`, such as "¥1,000" or "￥1,000"."""
    return format_currency(amount, CURRENCY, locale=locale)


def _first_present(columns: set[str], candidates: tuple[str, ...]) -> str | None:
    return next((name for name in candidates if name in columns), None)


def _read_plans(connection: Connection) -> list[PlanPrice] | None:
    if not inspect(connection).has_table("plans"):
        return None
    table = Table("plans", MetaData(), autoload_with=connection)
    columns = set(table.columns.keys())
    price_column = _first_present(columns, PRICE_COLUMNS)
    if "name" not in columns or price_column is None:
        logger.warning(
            "the plans table has no `name` or price column (%s); showing no prices",
            ", ".join(PRICE_COLUMNS),
        )
        return None
    credits_column = _first_present(columns, CREDITS_COLUMNS)
    rows = connection.execute(select(table).order_by(table.c[price_column])).mappings()
    return [_plan_price(row, price_column, credits_column) for row in rows]


def _plan_price(row: Any, price_column: str, credits_column: str | None) -> PlanPrice:
    credits = row[credits_column] if credits_column else None
    return PlanPrice(
        name=str(row["name"]),
        price=int(row[price_column]),
        credits=int(credits) if credits is not None else None,
    )


async def list_plan_prices(engine: AsyncEngine) -> list[PlanPrice] | None:
    """Return the plans cheapest first, or None while the database has no plans table.

    TODO: read the plans through the accounts service once it exists. Until then this reads
    the `plans` table directly, and without that table the pricing section shows a placeholder.
    """
    async with engine.connect() as connection:
        return await connection.run_sync(_read_plans)
