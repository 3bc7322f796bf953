"""Admin routes: every account, usage by plan and backend, and credit grants."""

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
