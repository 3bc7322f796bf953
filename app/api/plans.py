"""The public plan and credit pack catalog, for pricing pages and clients."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServicesDep
from app.api.schemas.accounts import CatalogPublic, PackPublic, PlanPublic

router = APIRouter(tags=["plans"])


@router.get("/plans", response_model=CatalogPublic)
async def list_plans(services: ServicesDep) -> CatalogPublic:
    """List the plans offered to customers and the credit packs on sale; needs no key."""
    currency = services.settings.currency
    plans = await services.plans.list(public_only=True)
    packs = await services.plans.packs()
    return CatalogPublic(
        plans=[PlanPublic.of(plan, currency) for plan in plans],
        packs=[PackPublic.of(pack, currency) for pack in packs],
    )
