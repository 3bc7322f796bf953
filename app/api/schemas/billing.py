"""Bodies of the billing routes and of the admin revenue route."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CheckoutCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: str | None = Field(None, max_length=32, description="A paid plan from GET /plans.")
    pack: str | None = Field(None, max_length=32, description="A credit pack from GET /plans.")
    success_url: str | None = Field(
        None, description="Where Stripe sends the buyer after paying; a URL on this site."
    )
    cancel_url: str | None = Field(
        None, description="Where Stripe sends the buyer who cancels; a URL on this site."
    )

    @model_validator(mode="after")
    def _one_item(self) -> CheckoutCreate:
        if (self.plan is None) == (self.pack is None):
            raise ValueError("give exactly one of `plan` and `pack`")
        return self


class CheckoutPublic(BaseModel):
    id: str = Field(description="The Stripe Checkout Session id.")
    url: str = Field(description="Send the buyer's browser here to pay.")


class PortalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    return_url: str | None = Field(
        None, description="Where the portal's back link leads; a URL on this site."
    )


class PortalPublic(BaseModel):
    url: str = Field(description="The Stripe customer portal for the caller's account.")


class SubscriptionPublic(BaseModel):
    object: Literal["subscription"] = "subscription"
    billing_configured: bool
    plan: str = Field(description="The plan in effect now.")
    status: str = Field(
        description="`none` without a subscription, else Stripe's status: active, past_due, "
        "canceled, incomplete, unpaid, ..."
    )
    cancel_at_period_end: bool
    current_period_end: int | None = Field(description="Unix seconds; null without a period.")


class MrrPlanPublic(BaseModel):
    plan: str
    subscriptions: int = Field(description="Active and past-due subscriptions on the plan.")
    mrr: int = Field(description="Monthly recurring revenue, tax included.")


class SubscriptionCountsPublic(BaseModel):
    active: int
    past_due: int


class RevenueDayPublic(BaseModel):
    date: date
    payments: int = Field(description="Paid invoices and credit packs.")
    failed_payments: int
    packs_sold: int
    refunds: int = Field(description="Charges refunded, fully or in part, first seen this day.")
    revenue: int = Field(description="Amount paid, tax included.")
    refunded: int = Field(description="Amount refunded, tax included.")


class RevenuePublic(BaseModel):
    object: Literal["revenue"] = "revenue"
    currency: str
    start: date = Field(serialization_alias="from")
    end: date = Field(serialization_alias="to")
    mrr: int = Field(description="Total monthly recurring revenue, tax included.")
    mrr_by_plan: list[MrrPlanPublic]
    subscriptions: SubscriptionCountsPublic
    data: list[RevenueDayPublic]
