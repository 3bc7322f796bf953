"""Request rate limits of API keys and accounts, and of demo clients by address."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.accounts.keys import Principal
from app.accounts.limits import Bucket, LimitStore, RateDecision
from app.accounts.plans import PlanCatalog
from app.errors import RateLimitedError

MINUTE_S = 60.0
LOGIN_WINDOW_S = 900.0
HOUR_S = 3600.0
DAY_S = 86_400.0
# Account mails (verification, password reset) one email address may trigger per hour; the
# client address may trigger four times as many.
MAILS_PER_HOUR = 5


@dataclass(frozen=True)
class DemoLimits:
    requests_per_minute: int
    requests_per_day: int


@dataclass(frozen=True)
class WebLimits:
    """Limits of the account pages: log-in attempts per email in 15 minutes (twice per address)."""

    login_attempts_per_15_min: int


def seconds_until_utc_midnight(now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


# Requests per minute of one account's browser session, whatever its plan allows the API.
WEB_REQUESTS_PER_MINUTE = 60


class RequestLimiter:
    """Checks every authenticated request against its plan's requests per minute.

    The same limit applies to the key and to its account, so an account cannot pass it by
    spreading requests over several keys. A plan with 0 requests per minute is not limited
    and costs no store access.
    """

    def __init__(
        self, store: LimitStore, plans: PlanCatalog, demo: DemoLimits, web: WebLimits
    ) -> None:
        self._store = store
        self._plans = plans
        self._demo = demo
        self._web = web

    async def check(self, principal: Principal) -> RateDecision | None:
        """Spend one request of the key and its account; None when the plan has no limit.

        A refused request spends nothing; `rejection()` builds its 429.
        """
        plan = await self._plans.get(principal.plan)
        limit = plan.requests_per_minute
        if limit <= 0:
            return None
        if principal.key_id is None:
            # A browser session: one page load makes several calls (keys, subscription, ...), so
            # the pages get a bucket of their own that never eats into the API's allowance.
            # Generations from the pages still spend credits and meet the concurrency limit.
            web_limit = max(limit, WEB_REQUESTS_PER_MINUTE)
            bucket = Bucket(f"rate:web:{principal.account_id}", "web", web_limit, MINUTE_S)
            return await self._store.hit([bucket])
        return await self._store.hit(
            [
                Bucket(f"rate:key:{principal.key_id}", "key", limit, MINUTE_S),
                Bucket(f"rate:account:{principal.account_id}", "account", limit, MINUTE_S),
            ]
        )

    @staticmethod
    def rejection(decision: RateDecision) -> RateLimitedError:
        limit = min(state.limit for state in decision.states)
        return RateLimitedError(
            f"This key or its account sent more than {limit} requests per minute, the limit of "
            f"its plan. Retry after {decision.retry_after_s:.1f} s, or upgrade the plan for a "
            "higher limit.",
            code="rate_limit_exceeded",
            retry_after_s=decision.retry_after_s,
            requests_per_minute=limit,
        )

    async def check_demo(self, client_address: str) -> RateDecision:
        """Spend one demo request of `client_address` per minute; None of it when refused."""
        per_minute = self._demo.requests_per_minute
        bucket = Bucket(f"demo:minute:{client_address}", "demo", per_minute, MINUTE_S)
        return await self._store.hit([bucket])

    def demo_rejection(self, decision: RateDecision) -> RateLimitedError:
        return RateLimitedError(
            f"The demo allows {self._demo.requests_per_minute} images per minute from one "
            f"address. Retry after {decision.retry_after_s:.1f} s, or create an account for "
            "higher limits.",
            code="demo_rate_limit_exceeded",
            retry_after_s=decision.retry_after_s,
        )

    async def count_demo_day(self, client_address: str, *, images: int = 1) -> None:
        """Count `images` demo images of `client_address` today, or raise 429 past the limit."""
        per_day = self._demo.requests_per_day
        today = datetime.now(UTC).strftime("%Y%m%d")
        counted = await self._store.add_capped(
            f"demo:day:{today}:{client_address}", images, per_day, DAY_S
        )
        if not counted.accepted:
            raise RateLimitedError(
                f"The demo allows {per_day} images per day from one address. Come back after "
                "midnight UTC, or create an account.",
                code="demo_daily_limit_exceeded",
                retry_after_s=seconds_until_utc_midnight(),
            )

    async def check_login(self, client_address: str, email: str) -> None:
        """Spend one log-in attempt of the address and of the email, or raise 429."""
        per_email = self._web.login_attempts_per_15_min
        decision = await self._hit_address_and_email(
            "login", client_address, email, per_email, per_email * 2, LOGIN_WINDOW_S
        )
        if not decision.allowed:
            raise RateLimitedError(
                f"Too many log-in attempts for this email address or from this network: "
                f"{per_email} are allowed in 15 minutes. Retry after "
                f"{decision.retry_after_s:.0f} s, or reset the password.",
                code="login_rate_limited",
                retry_after_s=decision.retry_after_s,
            )

    async def check_mail(self, client_address: str, email: str) -> None:
        """Spend one account mail of the address and of the recipient, or raise 429."""
        decision = await self._hit_address_and_email(
            "mail", client_address, email, MAILS_PER_HOUR, MAILS_PER_HOUR * 4, HOUR_S
        )
        if not decision.allowed:
            raise RateLimitedError(
                f"Too many mails were asked for this email address or from this network: "
                f"{MAILS_PER_HOUR} per address and hour are allowed. Retry after "
                f"{decision.retry_after_s:.0f} s.",
                code="mail_rate_limited",
                retry_after_s=decision.retry_after_s,
            )

    async def _hit_address_and_email(
        self,
        action: str,
        client_address: str,
        email: str,
        per_email: int,
        per_address: int,
        window_s: float,
    ) -> RateDecision:
        """Spend one `action` of the client address and of the email address, or none."""
        return await self._store.hit(
            [
                Bucket(f"{action}:address:{client_address}", "address", per_address, window_s),
                Bucket(f"{action}:email:{email.strip().lower()}", "email", per_email, window_s),
            ]
        )
