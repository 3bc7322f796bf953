"""Plans and credit packs as Stripe products and prices, and `visioncraft stripe sync`.

Each paid public plan and each credit pack is a Stripe product with our own id
(`visioncraft_plan_pro`, `visioncraft_pack_small`) and one active price that carries the same
string as its lookup key. Prices are tax-inclusive integers in CURRENCY; plans are monthly.

Stripe never changes a price's amount, so when the plan table changes, the sync creates a new
price, moves the lookup key to it and archives the old one. Subscriptions on the old price keep
their product, which is how events map a price back to a plan.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from app.accounts.plans import PackInfo, PlanInfo
from app.billing.gateway import StripeGateway

logger = logging.getLogger(__name__)

PRODUCT_PREFIX = "visioncraft_"
ItemKind = Literal["plan", "pack"]


@dataclass(frozen=True)
class CatalogItem:
    """A plan or a credit pack as it is sold: its price in the smallest unit of `currency`."""

    kind: ItemKind
    name: str
    display_name: str
    amount: int
    currency: str
    credits: int

    @property
    def product_id(self) -> str:
        return f"{PRODUCT_PREFIX}{self.kind}_{self.name}"

    @property
    def lookup_key(self) -> str:
        return self.product_id

    @property
    def is_recurring(self) -> bool:
        return self.kind == "plan"

    def matches(self, price: dict[str, Any]) -> bool:
        """Tell whether the Stripe price charges exactly what this item costs, as it should."""
        recurring = price.get("recurring") or None
        recurring_fits = (
            recurring is not None
            and recurring.get("interval") == "month"
            and recurring.get("interval_count", 1) == 1
            if self.is_recurring
            else recurring is None
        )
        return (
            price.get("unit_amount") == self.amount
            and price.get("currency") == self.currency
            and price.get("tax_behavior") == "inclusive"
            and product_id_of(price) == self.product_id
            and recurring_fits
        )

    def price_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "product": self.product_id,
            "currency": self.currency,
            "unit_amount": self.amount,
            "tax_behavior": "inclusive",
            "lookup_key": self.lookup_key,
            "transfer_lookup_key": True,
            "metadata": {"kind": self.kind, "name": self.name},
        }
        if self.is_recurring:
            params["recurring"] = {"interval": "month"}
        return params


def plan_item(plan: PlanInfo, currency: str) -> CatalogItem:
    return CatalogItem(
        kind="plan",
        name=plan.name,
        display_name=plan.display_name,
        amount=plan.price,
        currency=currency,
        credits=plan.monthly_credits,
    )


def pack_item(pack: PackInfo, currency: str) -> CatalogItem:
    return CatalogItem(
        kind="pack",
        name=pack.name,
        display_name=pack.display_name,
        amount=pack.price,
        currency=currency,
        credits=pack.credits,
    )


def is_sellable_plan(plan: PlanInfo) -> bool:
    """Tell whether customers can subscribe to the plan: it is public and costs something."""
    return plan.is_public and plan.price > 0


def product_id_of(price: dict[str, Any]) -> str | None:
    product = price.get("product")
    if isinstance(product, dict):
        product = product.get("id")
    return product if isinstance(product, str) else None


def item_name_of(price: dict[str, Any], kind: ItemKind) -> str | None:
    """Return the plan or pack that a Stripe price sells, from its product id."""
    product_id = product_id_of(price) or ""
    prefix = f"{PRODUCT_PREFIX}{kind}_"
    return product_id.removeprefix(prefix) if product_id.startswith(prefix) else None


@dataclass(frozen=True)
class SyncOutcome:
    """The sync's result for one item: `created`, `unchanged`, `replaced` or `archived`."""

    item: CatalogItem
    action: str
    price_id: str | None
    old_price_id: str | None = None

    def describe(self) -> str:
        what = f"{self.item.kind} {self.item.name}"
        price = f"{self.item.amount} {self.item.currency}"
        if self.action == "replaced":
            return f"{what}: replaced {self.old_price_id} with {self.price_id} ({price})"
        if self.action == "archived":
            return f"{what}: archived {self.old_price_id} (no longer sold)"
        return f"{what}: {self.action} {self.price_id} ({price})"


async def sync_catalog(
    gateway: StripeGateway, items: Sequence[CatalogItem], retired: Sequence[CatalogItem]
) -> list[SyncOutcome]:
    """Make Stripe's products and prices match `items` and stop selling `retired` ones.

    Running it twice changes nothing the second time: products have our own ids, prices are
    found by lookup key, and each create carries an idempotency key derived from what it creates.
    """
    prices = await gateway.prices_by_lookup_key([item.lookup_key for item in [*items, *retired]])
    outcomes = []
    for item in items:
        await _ensure_product(gateway, item)
        outcomes.append(await _ensure_price(gateway, item, prices.get(item.lookup_key)))
    for item in retired:
        old = prices.get(item.lookup_key)
        if old is not None:
            await gateway.archive_price(old["id"])
            outcomes.append(SyncOutcome(item, "archived", None, old["id"]))
    return outcomes


async def _ensure_product(gateway: StripeGateway, item: CatalogItem) -> None:
    product = await gateway.retrieve_product(item.product_id)
    if product is None:
        await gateway.create_product(
            {
                "id": item.product_id,
                "name": item.display_name,
                "metadata": {"kind": item.kind, "name": item.name},
            },
            idempotency_key=f"visioncraft-product-{item.product_id}",
        )
        return
    if product.get("name") != item.display_name or product.get("active") is not True:
        await gateway.update_product(item.product_id, {"name": item.display_name, "active": True})


async def _ensure_price(
    gateway: StripeGateway, item: CatalogItem, current: dict[str, Any] | None
) -> SyncOutcome:
    if current is not None and item.matches(current):
        return SyncOutcome(item, "unchanged", current["id"])
    # The key names what is created and what it replaces, so a retry returns the same price
    # and a later change (even back to an earlier amount) makes a new one.
    replaced = current["id"] if current is not None else "none"
    key = f"visioncraft-price-{item.lookup_key}-{item.amount}-{item.currency}-{replaced}"
    created = await gateway.create_price(item.price_params(), idempotency_key=key)
    if current is None:
        return SyncOutcome(item, "created", created["id"])
    await gateway.archive_price(current["id"])
    return SyncOutcome(item, "replaced", created["id"], current["id"])
