"""Billing routes: Checkout and portal sessions, the caller's subscription, Stripe's webhook."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Request

from app.api.deps import PrincipalDep, ServicesDep
from app.api.schemas.billing import (
    CheckoutCreate,
    CheckoutPublic,
    PortalCreate,
    PortalPublic,
    SubscriptionPublic,
)

router = APIRouter(prefix="/billing", tags=["billing"])
WEBHOOK_PATH = "/billing/webhook"


@router.post("/checkout", response_model=CheckoutPublic)
async def create_checkout(
    body: CheckoutCreate,
    principal: PrincipalDep,
    services: ServicesDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> CheckoutPublic:
    """Create a Stripe Checkout Session for a plan or a credit pack; send the buyer to `url`."""
    link = await services.billing.checkout(
        principal.account_id,
        plan=body.plan,
        pack=body.pack,
        success_url=body.success_url,
        cancel_url=body.cancel_url,
        idempotency_key=idempotency_key,
    )
    return CheckoutPublic(id=link.id, url=link.url)


@router.post("/portal", response_model=PortalPublic)
async def create_portal(
    principal: PrincipalDep,
    services: ServicesDep,
    body: Annotated[PortalCreate | None, Body()] = None,
) -> PortalPublic:
    """Open the Stripe customer portal: payment methods, invoices, plan changes, cancellation."""
    url = await services.billing.portal(
        principal.account_id, return_url=body.return_url if body else None
    )
    return PortalPublic(url=url)


@router.get("/subscription", response_model=SubscriptionPublic)
async def get_subscription(principal: PrincipalDep, services: ServicesDep) -> SubscriptionPublic:
    """Return the caller's plan and subscription status, also when billing is off."""
    status = await services.billing.subscription(principal.account_id)
    period_end = status.current_period_end
    return SubscriptionPublic(
        billing_configured=services.billing.is_configured,
        plan=status.plan,
        status=status.status,
        cancel_at_period_end=status.cancel_at_period_end,
        current_period_end=int(period_end.timestamp()) if period_end else None,
    )


@router.post(WEBHOOK_PATH.removeprefix("/billing"), include_in_schema=False)
async def receive_webhook(request: Request, services: ServicesDep) -> dict[str, Any]:
    """Receive a Stripe event; the signature is checked over the body exactly as it arrived."""
    payload = await request.body()
    outcome = await services.billing.receive_webhook(
        payload, request.headers.get("stripe-signature")
    )
    return {"received": True, "outcome": outcome.value}
