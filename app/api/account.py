"""The caller's account: plan, balances, cycle, and usage per day."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.accounts.usage import days_between
from app.api.deps import PrincipalDep, ServicesDep
from app.api.schemas.accounts import (
    AccountPublic,
    BalancePublic,
    CyclePublic,
    PlanPublic,
    UsageDayPublic,
    UsageKeyPublic,
    UsagePublic,
    UsageTotalPublic,
)
from app.container import Services

router = APIRouter(tags=["account"])

DEFAULT_USAGE_DAYS = 30


def resolve_range(start: date | None, end: date | None) -> tuple[date, date]:
    """Fill a missing end with today (UTC) and a missing start with 30 days before the end."""
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=DEFAULT_USAGE_DAYS - 1)
    return start, end


@router.get("/account", response_model=AccountPublic)
async def get_account(principal: PrincipalDep, services: ServicesDep) -> AccountPublic:
    balance = await services.credits.balance(principal.account_id)
    account = await services.accounts.get(principal.account_id)
    plan = await services.plans.get(account.plan)
    return AccountPublic(
        id=account.id,
        email=account.email,
        role=account.role,
        created_at=account.created_at,
        plan=PlanPublic.of(plan, services.settings.currency),
        balance=BalancePublic.of(balance),
        cycle=CyclePublic(started_at=balance.cycle_started_at, ends_at=balance.cycle_ends_at),
    )


@router.get("/usage", response_model=UsagePublic)
async def get_usage(
    principal: PrincipalDep,
    services: ServicesDep,
    start: Annotated[date | None, Query(alias="from", description="First UTC day.")] = None,
    end: Annotated[date | None, Query(alias="to", description="Last UTC day.")] = None,
    granularity: Literal["day"] = "day",
) -> UsagePublic:
    """Images and credits of succeeded generations per UTC day, with each day split by key."""
    start, end = resolve_range(start, end)
    return await usage_report(services, principal.account_id, start, end, granularity)


async def usage_report(
    services: Services,
    account_id: str,
    start: date,
    end: date,
    granularity: Literal["day"] = "day",
) -> UsagePublic:
    """Build the account's usage per UTC day, for the API and the dashboard's chart."""
    rows = await services.usage.by_key(account_id, start, end)
    per_day: dict[date, list[UsageKeyPublic]] = defaultdict(list)
    for row in rows:
        per_day[row.day].append(
            UsageKeyPublic(key_id=row.group[0], images=row.images, credits=row.credits)
        )
    days = [
        UsageDayPublic(
            date=day,
            images=sum(key.images for key in per_day[day]),
            credits=sum(key.credits for key in per_day[day]),
            keys=per_day[day],
        )
        for day in days_between(start, end)
    ]
    return UsagePublic(
        start=start,
        end=end,
        granularity=granularity,
        data=days,
        total=UsageTotalPublic(
            images=sum(day.images for day in days), credits=sum(day.credits for day in days)
        ),
    )
