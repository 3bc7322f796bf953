"""Billing for the API routes: checkout and portal sessions, subscription status, webhooks.

Billing is on only when both Stripe settings are set. Without them every method that needs
Stripe raises BillingNotConfiguredError (503, naming the settings), and the rest of the
service works as before.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.plans import PlanCatalog
from app.billing.catalog import CatalogItem, is_sellable_plan, pack_item, plan_item
from app.billing.events import ENDED_STATUSES, EventOutcome, EventProcessor
from app.billing.gateway import StripeGateway
from app.billing.metrics import BillingMetrics
from app.billing.webhooks import verify_event
from app.errors import (
    BillingNotConfiguredError,
    BillingUnavailableError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    WebhookRejectedError,
)
from app.storage.tables import Account, BillingSubscription, StripeEvent

logger = logging.getLogger(__name__)

MAX_URL_CHARS = 2048
MAX_IDEMPOTENCY_KEY_CHARS = 255


@dataclass(frozen=True)
class BillingConfig:
    """The Stripe settings, present only when billing is on."""

    webhook_secret: str


@dataclass(frozen=True)
class CheckoutLink:
    id: str
    url: str


@dataclass(frozen=True)
class SubscriptionStatus:
    """The caller's plan and, if it has one, its latest Stripe subscription."""

    plan: str
    status: str  # `none` without a subscription, else Stripe's status
    cancel_at_period_end: bool
    current_period_end: datetime | None


class BillingService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        plans: PlanCatalog,
        *,
        public_base_url: str,
        currency: str,
        missing_settings: list[str],
        config: BillingConfig | None = None,
        gateway: StripeGateway | None = None,
        processor: EventProcessor | None = None,
        metrics: BillingMetrics | None = None,
    ) -> None:
        self._sessions = sessions
        self._plans = plans
        self._public_base_url = public_base_url
        self._currency = currency
        self.missing_settings = missing_settings
        self._config = config
        self.gateway = gateway
        self.processor = processor
        self._metrics = metrics

    @property
    def is_configured(self) -> bool:
        return self._config is not None and self.gateway is not None

    async def aclose(self) -> None:
        if self.gateway is not None:
            await self.gateway.aclose()

    async def checkout(
        self,
        account_id: str,
        *,
        plan: str | None,
        pack: str | None,
        success_url: str | None,
        cancel_url: str | None,
        idempotency_key: str | None,
    ) -> CheckoutLink:
        """Create a Checkout Session for a plan (a subscription) or a credit pack (a payment)."""
        gateway = self._require_gateway()
        success = self._redirect_url(success_url, "success_url", "/dashboard?checkout=success")
        cancel = self._redirect_url(cancel_url, "cancel_url", "/dashboard?checkout=cancelled")
        key = _checked_idempotency_key(idempotency_key)
        item = await self._item(plan=plan, pack=pack)
        account = await self._account(account_id)
        if item.kind == "plan":
            await self._refuse_second_subscription(account.id)
        price = await self._price_of(item)
        customer_id = await self._ensure_customer(account)

        metadata = {"account_id": account.id, "kind": item.kind, item.kind: item.name}
        params: dict[str, object] = {
            "mode": "subscription" if item.kind == "plan" else "payment",
            "line_items": [{"price": price, "quantity": 1}],
            "customer": customer_id,
            "client_reference_id": account.id,
            "success_url": success,
            "cancel_url": cancel,
            "metadata": {**metadata, "credits": str(item.credits)},
        }
        if item.kind == "plan":
            params["subscription_data"] = {"metadata": metadata}
        else:
            params["payment_intent_data"] = {"metadata": metadata}
            # A paid invoice for a one-time payment, so pack buyers get an invoice too.
            params["invoice_creation"] = {"enabled": True}
        session = await gateway.create_checkout_session(
            params, idempotency_key=f"visioncraft-checkout-{account.id}-{key}"
        )
        return CheckoutLink(id=session["id"], url=session["url"])

    async def portal(self, account_id: str, *, return_url: str | None) -> str:
        """Create a customer portal session and return its URL."""
        gateway = self._require_gateway()
        target = self._redirect_url(return_url, "return_url", "/dashboard")
        account = await self._account(account_id)
        customer_id = await self._ensure_customer(account)
        session = await gateway.create_portal_session(customer_id=customer_id, return_url=target)
        url: str = session["url"]
        return url

    async def subscription(self, account_id: str) -> SubscriptionStatus:
        """Return the account's plan and its latest subscription; works without billing."""
        account = await self._account(account_id)
        async with self._sessions() as session:
            row = await session.scalar(
                select(BillingSubscription)
                .where(BillingSubscription.account_id == account.id)
                .order_by(BillingSubscription.created_at.desc())
                .limit(1)
            )
        if row is None:
            return SubscriptionStatus(account.plan, "none", False, None)
        return SubscriptionStatus(
            account.plan, row.status, row.cancel_at_period_end, row.current_period_end
        )

    async def receive_webhook(self, payload: bytes, signature: str | None) -> EventOutcome:
        """Verify a webhook request and process its event once; see EventProcessor."""
        if self._config is None or self.processor is None:
            raise BillingNotConfiguredError(self.missing_settings)
        try:
            event = verify_event(payload, signature, self._config.webhook_secret)
        except WebhookRejectedError as error:
            if self._metrics is not None:
                self._metrics.webhook_rejections.add(1, {"reason": error.instance_code})
            raise
        return await self.processor.process(event, payload.decode("utf-8"))

    async def last_webhook_at(self) -> datetime | None:
        """Return when the newest verified event was received, by any replica."""
        async with self._sessions() as session:
            return await session.scalar(select(func.max(StripeEvent.received_at)))

    def _require_gateway(self) -> StripeGateway:
        if self._config is None or self.gateway is None:
            raise BillingNotConfiguredError(self.missing_settings)
        return self.gateway

    async def _item(self, *, plan: str | None, pack: str | None) -> CatalogItem:
        if plan is not None:
            found = await self._plans.get(plan)
            if not is_sellable_plan(found):
                raise InvalidRequestError(
                    f"The {plan!r} plan cannot be bought. Choose a paid plan from GET /api/v1/plans.",
                    field="plan",
                    code="plan_not_for_sale",
                )
            return plan_item(found, self._currency)
        packs = {item.name: item for item in await self._plans.packs()}
        if pack not in packs:
            raise NotFoundError(
                f"No credit pack named {pack!r}. Use one of: {', '.join(sorted(packs))}.",
                code="pack_not_found",
            )
        return pack_item(packs[pack], self._currency)

    async def _price_of(self, item: CatalogItem) -> str:
        """Return the id of the Stripe price that sells `item` at the price in our table."""
        assert self.gateway is not None
        price = (await self.gateway.prices_by_lookup_key([item.lookup_key])).get(item.lookup_key)
        if price is None or not item.matches(price):
            logger.error(
                "the Stripe price with lookup key %s is missing or does not match the %s table "
                "(%s %s); run `visioncraft stripe sync`",
                item.lookup_key,
                item.kind,
                item.amount,
                item.currency,
            )
            raise BillingUnavailableError(
                f"The {item.kind} {item.name!r} cannot be bought right now because its Stripe "
                "price is not set up. Try again later; the operator must run "
                "`visioncraft stripe sync`.",
                code="billing_catalog_not_synced",
            )
        price_id: str = price["id"]
        return price_id

    async def live_subscription(self, account_id: str) -> str | None:
        """Return the id of the account's subscription that has not ended, if there is one."""
        async with self._sessions() as session:
            live: str | None = await session.scalar(
                select(BillingSubscription.id)
                .where(
                    BillingSubscription.account_id == account_id,
                    BillingSubscription.status.not_in(ENDED_STATUSES),
                )
                .limit(1)
            )
        return live

    async def _refuse_second_subscription(self, account_id: str) -> None:
        live = await self.live_subscription(account_id)
        if live is not None:
            raise ConflictError(
                f"The account has the subscription {live} already. Change or cancel the plan in "
                "the billing portal (POST /api/v1/billing/portal).",
                code="subscription_exists",
            )

    async def _ensure_customer(self, account: Account) -> str:
        """Return the account's Stripe customer, creating and linking it on first use."""
        if account.stripe_customer_id:
            return account.stripe_customer_id
        assert self.gateway is not None
        # One key per account: concurrent first checkouts get the same customer from Stripe.
        customer = await self.gateway.create_customer(
            email=account.email,
            account_id=account.id,
            idempotency_key=f"visioncraft-customer-{account.id}",
        )
        async with self._sessions.begin() as session:
            await session.execute(
                update(Account)
                .where(Account.id == account.id, Account.stripe_customer_id.is_(None))
                .values(stripe_customer_id=customer["id"])
            )
            linked = await session.scalar(
                select(Account.stripe_customer_id).where(Account.id == account.id)
            )
        return linked or str(customer["id"])

    async def _account(self, account_id: str) -> Account:
        async with self._sessions() as session:
            account = await session.get(Account, account_id)
        if account is None:
            raise NotFoundError(f"No account with id {account_id!r}.", code="account_not_found")
        return account

    def _redirect_url(self, url: str | None, field: str, default_path: str) -> str:
        """Return `url` if it points into this site (PUBLIC_BASE_URL), else raise 422."""
        if url is None:
            return f"{self._public_base_url}{default_path}"
        base = urlsplit(self._public_base_url)
        target = urlsplit(url)
        base_path = base.path.rstrip("/")
        is_inside = (
            len(url) <= MAX_URL_CHARS
            and "\\" not in url
            and target.scheme == base.scheme
            and target.netloc == base.netloc
            and (target.path == base_path or target.path.startswith(f"{base_path}/"))
        )
        if not is_inside:
            raise InvalidRequestError(
                f"`{field}` must be a URL on this site, starting with {self._public_base_url}/ "
                f"(at most {MAX_URL_CHARS} characters); got {url[:200]!r}.",
                field=field,
                code="invalid_redirect_url",
            )
        return url


def _checked_idempotency_key(key: str | None) -> str:
    """Return a digest of the client's Idempotency-Key, or a random value when it sent none.

    The digest keeps Stripe's idempotency key within its 255 characters.
    """
    if key is None:
        return secrets.token_hex(16)
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidRequestError(
            f"The Idempotency-Key header has {len(key)} characters; send 1 to "
            f"{MAX_IDEMPOTENCY_KEY_CHARS}.",
            field="Idempotency-Key",
            code="invalid_idempotency_key",
        )
    return hashlib.sha256(key.encode()).hexdigest()[:32]
