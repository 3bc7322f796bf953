"""The checks a generation passes before its backend is called, and their undoing after.

In order: the plan's images per request, the key's count of safety-blocked prompts, the
account's concurrent generations (a lease that expires if the process dies), the credit
reservation, and the daily cap on estimated upstream spend. Leaving the `admit` block without
`Admission.use()` refunds the reservation; a blocked prompt is refunded and counted.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from app.accounts.credits import CreditService, Reservation
from app.accounts.keys import Principal
from app.accounts.limits import LimitStore
from app.accounts.metrics import AccountMetrics, DailySpend, utc_day
from app.accounts.plans import PlanCatalog, PlanInfo
from app.accounts.ratelimit import DAY_S, seconds_until_utc_midnight
from app.errors import (
    CapacityExceededError,
    ContentPolicyViolation,
    InvalidRequestError,
    RateLimitedError,
)
from app.generation.options import ImageSize
from app.storage.tables import Generation

logger = logging.getLogger(__name__)

HOUR_S = 3600
# Backends that cost money per image; the demo backend draws locally for free.
PAID_BACKENDS = frozenset({"gemini"})
MICRO_USD = 1_000_000
CONCURRENCY_RETRY_AFTER_S = 1.0


@dataclass(frozen=True)
class GateSettings:
    blocked_prompts_per_hour: int
    lease_ttl_s: float
    daily_spend_cap_usd: float
    cost_per_image_usd: Mapping[str, float]


@dataclass
class Admission:
    """A generation allowed to run; call `use()` once its images are stored."""

    price: int
    plan: str
    reservation: Reservation | None
    _credits: CreditService
    used: bool = False

    async def use(self) -> None:
        if self.reservation is not None:
            await self._credits.use(self.reservation)
        self.used = True


class GenerationGate:
    """Admits generations: limits, credits and the spend cap, released when they end."""

    def __init__(
        self,
        *,
        plans: PlanCatalog,
        credits: CreditService,
        store: LimitStore,
        metrics: AccountMetrics,
        settings: GateSettings,
    ) -> None:
        self._plans = plans
        self._credits = credits
        self._store = store
        self._metrics = metrics
        self._settings = settings
        self._cap_warned_on: str | None = None

    @contextlib.asynccontextmanager
    async def admit(self, principal: Principal, generation: Generation) -> AsyncIterator[Admission]:
        """Admit `generation`, or raise 422, 429, 402 or 503; refund unless it was used."""
        plan = await self._plans.get(principal.plan)
        self._check_images_per_request(plan, generation.image_count)
        await self._check_blocked_prompts(principal)
        async with self._concurrency_lease(principal, plan):
            price = (
                0
                if principal.is_test
                else plan.price_of(ImageSize(generation.image_size), generation.image_count)
            )
            reservation = await self._credits.reserve(
                principal.account_id,
                price,
                generation_id=generation.id,
                api_key_id=principal.key_id,
            )
            admission = Admission(
                price=price, plan=plan.name, reservation=reservation, _credits=self._credits
            )
            generation.plan = plan.name
            generation.credits = price  # charged only if the generation succeeds
            try:
                await self._count_upstream_spend(generation)
                yield admission
            except ContentPolicyViolation:
                await self._count_blocked_prompt(principal)
                await self._refund(admission, reason="blocked")
                raise
            except BaseException:
                await self._refund(admission, reason="failure")
                raise
            if not admission.used:
                await self._refund(admission, reason="not_used")

    async def _refund(self, admission: Admission, *, reason: str) -> None:
        if admission.reservation is not None:
            await self._credits.refund(admission.reservation, reason=reason)

    @staticmethod
    def _check_images_per_request(plan: PlanInfo, count: int) -> None:
        limit = plan.images_per_request
        if limit > 0 and count > limit:
            raise InvalidRequestError(
                f"The {plan.name!r} plan allows {limit} images per request; this request asks "
                f"for {count}. Set `n` to {limit} or less, or upgrade the plan.",
                field="n",
                code="too_many_images",
                images_per_request=limit,
            )

    def _blocked_key(self, principal: Principal) -> str:
        return f"blocked:{principal.key_id}:{int(time.time()) // HOUR_S}"

    async def _check_blocked_prompts(self, principal: Principal) -> None:
        if principal.key_id is None:
            return
        limit = self._settings.blocked_prompts_per_hour
        if await self._store.read_counter(self._blocked_key(principal)) < limit:
            return
        raise RateLimitedError(
            f"This key had {limit} prompts blocked by the safety filters in this hour, the "
            "most allowed. Review what is being sent, and retry in the next hour.",
            code="too_many_blocked_prompts",
            retry_after_s=HOUR_S - time.time() % HOUR_S,
            blocked_prompts_per_hour=limit,
        )

    async def _count_blocked_prompt(self, principal: Principal) -> None:
        if principal.key_id is None:
            return
        # The cap is only there to keep the counter bounded; the check above rejects first.
        await self._store.add_capped(self._blocked_key(principal), 1, 1_000_000, HOUR_S)

    @contextlib.asynccontextmanager
    async def _concurrency_lease(self, principal: Principal, plan: PlanInfo) -> AsyncIterator[None]:
        limit = plan.concurrent_generations
        if limit <= 0:
            yield
            return
        key = f"concurrency:{principal.account_id}"
        lease_id = secrets.token_hex(8)
        if not await self._store.acquire_lease(key, limit, lease_id, self._settings.lease_ttl_s):
            raise RateLimitedError(
                f"The {plan.name!r} plan runs {limit} generations at a time and that many are "
                "running. Retry when one finishes, or upgrade the plan.",
                code="too_many_concurrent_generations",
                retry_after_s=CONCURRENCY_RETRY_AFTER_S,
                concurrent_generations=limit,
            )
        try:
            yield
        finally:
            await self._store.release_lease(key, lease_id)

    async def _count_upstream_spend(self, generation: Generation) -> None:
        """Add the estimated cost to today's spend, or raise 503 past the daily cap."""
        if generation.backend not in PAID_BACKENDS:
            return
        cost_usd = self._settings.cost_per_image_usd[generation.image_size] * generation.image_count
        cap_usd = self._settings.daily_spend_cap_usd
        if cap_usd > 0:
            day = utc_day()
            counted = await self._store.add_capped(
                f"spend:{day}", round(cost_usd * MICRO_USD), round(cap_usd * MICRO_USD), DAY_S
            )
            self._metrics.record_spend_today(DailySpend(day=day, usd=counted.value / MICRO_USD))
            if not counted.accepted:
                if self._cap_warned_on != day:  # once a day, not once per refused request
                    self._cap_warned_on = day
                    logger.warning(
                        "the daily upstream spend cap of %.2f USD is reached; paid generations "
                        "answer 503 until midnight UTC",
                        cap_usd,
                    )
                raise CapacityExceededError(
                    "The service reached its daily capacity for this backend. Retry after "
                    "midnight UTC, or use a vc_test_ key for the demo backend meanwhile.",
                    retry_after_s=seconds_until_utc_midnight(),
                )
        self._metrics.upstream_spend.add(cost_usd, {"gen_ai.request.model": generation.model})
