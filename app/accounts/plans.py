"""Plans and credit packs: rows in the database, read through a short-lived cache.

Every authenticated request needs its plan's limits, so the catalog keeps all plans in memory
and reloads them every `refresh_s` seconds. A changed row takes effect within that time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import NotFoundError
from app.generation.options import ImageSize
from app.storage.tables import CreditPack, Plan

PLAN_REFRESH_S = 30.0


class Renewal:
    """Ways a plan's monthly allowance renews."""

    CYCLE = "cycle"  # lazily, at the end of each monthly cycle (free plans)
    INVOICE = "invoice"  # when billing reports a paid invoice (paid plans)


@dataclass(frozen=True)
class PlanInfo:
    """A plan as the limits and the credit service use it. A limit of 0 means unlimited."""

    name: str
    display_name: str
    price: int
    monthly_credits: int
    credits_per_image: Mapping[ImageSize, int]
    requests_per_minute: int
    concurrent_generations: int
    images_per_request: int
    renewal: str
    is_public: bool

    def price_of(self, image_size: ImageSize, count: int) -> int:
        """Return the credits that `count` images of `image_size` cost on this plan."""
        return self.credits_per_image[image_size] * count

    @classmethod
    def from_row(cls, row: Plan) -> PlanInfo:
        return cls(
            name=row.name,
            display_name=row.display_name,
            price=row.price,
            monthly_credits=row.monthly_credits,
            credits_per_image={
                ImageSize.K1: row.credits_per_image_1k,
                ImageSize.K2: row.credits_per_image_2k,
                ImageSize.K4: row.credits_per_image_4k,
            },
            requests_per_minute=row.requests_per_minute,
            concurrent_generations=row.concurrent_generations,
            images_per_request=row.images_per_request,
            renewal=row.renewal,
            is_public=row.is_public,
        )


@dataclass(frozen=True)
class PackInfo:
    name: str
    display_name: str
    credits: int
    price: int


class PlanCatalog:
    """Reads plans and credit packs; plans are cached for `refresh_s` seconds."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        refresh_s: float = PLAN_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._refresh_s = refresh_s
        self._clock = clock
        self._plans: dict[str, PlanInfo] = {}
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    async def get(self, name: str) -> PlanInfo:
        """Return the plan called `name`, or raise NotFoundError naming the plans there are."""
        plans = await self._current()
        plan = plans.get(name)
        if plan is None:
            plans = await self._reload()
            plan = plans.get(name)
        if plan is None:
            raise NotFoundError(
                f"No plan named {name!r}. Use one of: {', '.join(sorted(plans))}.",
                code="plan_not_found",
            )
        return plan

    async def list(self, *, public_only: bool = False) -> Sequence[PlanInfo]:
        plans = await self._current()
        return [plan for plan in plans.values() if plan.is_public or not public_only]

    async def packs(self) -> Sequence[PackInfo]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(CreditPack)
                .where(CreditPack.is_active.is_(True))
                .order_by(CreditPack.sort_order, CreditPack.name)
            )
            return [
                PackInfo(
                    name=row.name,
                    display_name=row.display_name,
                    credits=row.credits,
                    price=row.price,
                )
                for row in rows
            ]

    async def _current(self) -> dict[str, PlanInfo]:
        if self._loaded_at is not None and self._clock() - self._loaded_at < self._refresh_s:
            return self._plans
        return await self._reload()

    async def _reload(self) -> dict[str, PlanInfo]:
        async with self._lock:
            async with self._sessions() as session:
                rows = await session.scalars(select(Plan).order_by(Plan.sort_order, Plan.name))
                self._plans = {row.name: PlanInfo.from_row(row) for row in rows}
            self._loaded_at = self._clock()
            return self._plans
