"""Bodies of the account, usage, key, plan and admin routes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.accounts.credits import Balance
from app.accounts.plans import PackInfo, PlanInfo


class PlanPublic(BaseModel):
    name: str
    display_name: str
    price: int = Field(description="In the smallest unit of `currency`.")
    currency: str
    monthly_credits: int
    credits_per_image: dict[str, int] = Field(description="Credits per image by image size.")
    requests_per_minute: int = Field(description="0 means unlimited.")
    concurrent_generations: int = Field(description="0 means unlimited.")
    images_per_request: int = Field(description="0 means unlimited.")

    @classmethod
    def of(cls, plan: PlanInfo, currency: str) -> PlanPublic:
        return cls(
            name=plan.name,
            display_name=plan.display_name,
            price=plan.price,
            currency=currency,
            monthly_credits=plan.monthly_credits,
            credits_per_image={
                size.value: credits for size, credits in plan.credits_per_image.items()
            },
            requests_per_minute=plan.requests_per_minute,
            concurrent_generations=plan.concurrent_generations,
            images_per_request=plan.images_per_request,
        )


class PackPublic(BaseModel):
    name: str
    display_name: str
    credits: int
    price: int
    currency: str

    @classmethod
    def of(cls, pack: PackInfo, currency: str) -> PackPublic:
        return cls(
            name=pack.name,
            display_name=pack.display_name,
            credits=pack.credits,
            price=pack.price,
            currency=currency,
        )


class CatalogPublic(BaseModel):
    plans: list[PlanPublic]
    packs: list[PackPublic]


class BalancePublic(BaseModel):
    allowance: int = Field(description="Left of this cycle's allowance; expires at cycle end.")
    purchased: int = Field(description="Granted and bought credits; they never expire.")
    total: int
    reserved: int = Field(description="Held for generations that are running now.")

    @classmethod
    def of(cls, balance: Balance) -> BalancePublic:
        return cls(
            allowance=balance.allowance,
            purchased=balance.purchased,
            total=balance.total,
            reserved=balance.reserved,
        )


class CyclePublic(BaseModel):
    started_at: datetime
    ends_at: datetime


class AccountPublic(BaseModel):
    id: str
    object: Literal["account"] = "account"
    email: str
    role: str
    created_at: datetime
    plan: PlanPublic
    balance: BalancePublic
    cycle: CyclePublic


class UsageKeyPublic(BaseModel):
    key_id: str | None
    images: int
    credits: int


class UsageDayPublic(BaseModel):
    date: date
    images: int
    credits: int
    keys: list[UsageKeyPublic]


class UsageTotalPublic(BaseModel):
    images: int
    credits: int


class UsagePublic(BaseModel):
    object: Literal["usage"] = "usage"
    start: date = Field(serialization_alias="from")
    end: date = Field(serialization_alias="to")
    granularity: Literal["day"] = "day"
    data: list[UsageDayPublic]
    total: UsageTotalPublic


class AdminUsageRowPublic(BaseModel):
    date: date
    plan: str | None
    backend: str
    images: int
    credits: int


class AdminUsagePublic(BaseModel):
    object: Literal["list"] = "list"
    start: date = Field(serialization_alias="from")
    end: date = Field(serialization_alias="to")
    data: list[AdminUsageRowPublic]


class KeyPublic(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    mode: str
    redacted: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreatedPublic(KeyPublic):
    key: str = Field(description="The whole key. It is returned only in this response.")


class KeyListPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyPublic]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    mode: Literal["live", "test"] = "live"
    scopes: list[str] | None = Field(
        None, description="Default: images:generate, images:read, keys:manage."
    )


class AdminAccountPublic(BaseModel):
    id: str
    email: str
    role: str
    plan: str
    created_at: datetime
    allowance_credits: int
    purchased_credits: int
    cycle_ends_at: datetime


class AdminAccountListPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[AdminAccountPublic]
    has_more: bool
    next_cursor: str | None


class CreditGrantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credits: int = Field(ge=1, le=10_000_000)
    reason: str = Field(min_length=1, max_length=400)


class CreditGrantPublic(BaseModel):
    account_id: str
    granted: int
    balance: BalancePublic
