"""Admin routes: every account, usage by plan and backend, credit grants and revenue."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from app.api.account import resolve_range
from app.api.deps import AdminDep, ServicesDep
from app.api.schemas.accounts import (
    AdminAccountListPublic,
    AdminAccountPublic,
    AdminUsagePublic,
    AdminUsageRowPublic,
    BalancePublic,
    CreditGrantCreate,
    CreditGrantPublic,
)
from app.api.schemas.billing import (
    MrrPlanPublic,
    RevenueDayPublic,
    RevenuePublic,
    SubscriptionCountsPublic,
)
from app.billing.revenue import BILLING_STATUSES

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/accounts", response_model=AdminAccountListPublic)
async def list_accounts(
    principal: AdminDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    search: Annotated[
        str | None, Query(max_length=100, description="Part of the email address, any case.")
    ] = None,
) -> AdminAccountListPublic:
    """List accounts oldest first; pass `next_cursor` for the next page."""
    rows = list(await services.accounts.list(limit=limit + 1, cursor=cursor, search=search))
    has_more = len(rows) > limit
    rows = rows[:limit]
    return AdminAccountListPublic(
        data=[
            AdminAccountPublic(
                id=row.id,
                email=row.email,
                role=row.role,
                plan=row.plan,
                created_at=row.created_at,
                allowance_credits=row.allowance_credits,
                purchased_credits=row.purchased_credits,
                cycle_ends_at=row.cycle_ends_at,
            )
            for row in rows
        ],
        has_more=has_more,
        next_cursor=rows[-1].id if has_more else None,
    )


@router.get("/usage", response_model=AdminUsagePublic)
async def get_usage(
    principal: AdminDep,
    services: ServicesDep,
    start: Annotated[date | None, Query(alias="from", description="First UTC day.")] = None,
    end: Annotated[date | None, Query(alias="to", description="Last UTC day.")] = None,
) -> AdminUsagePublic:
    """Images and credits of every account per UTC day, plan and backend."""
    start, end = resolve_range(start, end)
    rows = await services.usage.by_plan_and_backend(start, end)
    return AdminUsagePublic(
        start=start,
        end=end,
        data=[
            AdminUsageRowPublic(
                date=row.day,
                plan=row.group[0],
                backend=row.group[1] or "",
                images=row.images,
                credits=row.credits,
            )
            for row in rows
        ],
    )


@router.post("/accounts/{account_id}/credits", response_model=CreditGrantPublic, status_code=201)
async def grant_credits(
    account_id: str, body: CreditGrantCreate, principal: AdminDep, services: ServicesDep
) -> CreditGrantPublic:
    """Add credits that never expire to an account, with the reason kept in its ledger."""
    account = await services.accounts.get(account_id)
    await services.credits.grant(
        account.id, body.credits, reason=f"{body.reason} (by admin key {principal.key_id})"
    )
    balance = await services.credits.balance(account.id)
    return CreditGrantPublic(
        account_id=account.id, granted=body.credits, balance=BalancePublic.of(balance)
    )


@router.get("/revenue", response_model=RevenuePublic)
async def get_revenue(
    principal: AdminDep,
    services: ServicesDep,
    start: Annotated[date | None, Query(alias="from", description="First UTC day.")] = None,
    end: Annotated[date | None, Query(alias="to", description="Last UTC day.")] = None,
) -> RevenuePublic:
    """MRR by plan, subscriptions by status, and payments, packs and refunds per UTC day."""
    start, end = resolve_range(start, end)
    days = await services.revenue.days(start, end)
    figures = await services.revenue.subscription_figures()
    by_plan: dict[str, int] = {}
    for (plan, status), count in figures.counts.items():
        if status in BILLING_STATUSES:
            by_plan[plan] = by_plan.get(plan, 0) + count
    statuses = {"active": 0, "past_due": 0}
    for (_, status), count in figures.counts.items():
        if status in statuses:
            statuses[status] += count
    return RevenuePublic(
        currency=services.settings.currency,
        start=start,
        end=end,
        mrr=sum(figures.mrr.values()),
        mrr_by_plan=[
            MrrPlanPublic(plan=plan, subscriptions=count, mrr=figures.mrr.get(plan, 0))
            for plan, count in sorted(by_plan.items())
        ],
        subscriptions=SubscriptionCountsPublic(**statuses),
        data=[
            RevenueDayPublic(
                date=day.day,
                payments=day.payments,
                failed_payments=day.failed_payments,
                packs_sold=day.packs_sold,
                refunds=day.refunds,
                revenue=day.revenue,
                refunded=day.refunded,
            )
            for day in days
        ],
    )
