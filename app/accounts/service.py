"""Accounts: the owners of API keys and images, each on a plan with a role.

Roles: `user`, `admin` (may hold keys with the `admin` scope), and `system` for the account
that owns demo images, which has no keys and no history of its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.credits import CreditService
from app.accounts.plans import PlanCatalog
from app.errors import ConflictError, InvalidRequestError, NotFoundError
from app.storage.ids import is_valid_id, new_id
from app.storage.tables import Account, utc_now

# The account that owns keys created without `--account`; made on first start.
LOCAL_ACCOUNT_EMAIL = "admin@localhost"
# The account that owns the images of the demo page; it has no keys.
DEMO_ACCOUNT_EMAIL = "demo@visioncraft.invalid"
INTERNAL_PLAN = "unlimited"
DEFAULT_PLAN = "free"
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+$")
MIN_PASSWORD_CHARS = 10
# scrypt parameters: 16 MiB of memory per hash (n * r * 128 bytes).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    """Hash a password with scrypt into `scrypt$n$r$p$salt$hash` (base64 parts)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    encoded = [base64.b64encode(part).decode() for part in (salt, digest)]
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encoded[0]}${encoded[1]}"


def verify_password(password: str, stored: str) -> bool:
    """Tell whether `password` matches a hash made by `hash_password`."""
    scheme, n, r, p, salt, digest = stored.split("$")
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(
        password.encode(),
        salt=base64.b64decode(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=32,
    )
    return hmac.compare_digest(candidate, base64.b64decode(digest))


def normalize_email(email: str) -> str:
    normalized = email.strip().lower()
    if not EMAIL_PATTERN.match(normalized) or len(normalized) > 320:
        raise InvalidRequestError(
            f"{email!r} is not an email address; give one such as name@example.com.",
            field="email",
            code="invalid_email",
        )
    return normalized


class AccountService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        plans: PlanCatalog,
        credits: CreditService,
    ) -> None:
        self._sessions = sessions
        self._plans = plans
        self._credits = credits

    async def create(self, email: str, *, role: str = "user", plan: str = DEFAULT_PLAN) -> Account:
        """Create an account on `plan` and grant the plan's first monthly allowance."""
        email = normalize_email(email) if role != "system" else email
        target = await self._plans.get(plan)
        now = utc_now()
        account = Account(
            id=new_id("acct"),
            email=email,
            role=role,
            plan=target.name,
            allowance_credits=0,
            purchased_credits=0,
            created_at=now,
            cycle_started_at=now,
            cycle_ends_at=now,
        )
        try:
            async with self._sessions.begin() as session:
                session.add(account)
        except IntegrityError:
            raise ConflictError(
                f"An account with the email {email!r} already exists.", code="email_taken"
            ) from None
        await self._credits.start_cycle(account.id, plan=target, reason="account created")
        return await self.get(account.id)

    async def get(self, account_id: str) -> Account:
        account = None
        if is_valid_id(account_id, "acct"):
            async with self._sessions() as session:
                account = await session.get(Account, account_id)
        if account is None:
            raise NotFoundError(f"No account with id {account_id!r}.", code="account_not_found")
        return account

    async def get_by_email(self, email: str) -> Account:
        async with self._sessions() as session:
            account = await session.scalar(
                select(Account).where(Account.email == email.strip().lower())
            )
        if account is None:
            raise NotFoundError(f"No account with the email {email!r}.", code="account_not_found")
        return account

    async def list(
        self, *, limit: int = 100, cursor: str | None = None, include_system: bool = False
    ) -> Sequence[Account]:
        """Return accounts oldest first; `cursor` is the last id of the previous page."""
        query = select(Account).order_by(Account.id).limit(limit)
        if cursor is not None:
            query = query.where(Account.id > cursor)
        if not include_system:
            query = query.where(Account.role != "system")
        async with self._sessions() as session:
            return list(await session.scalars(query))

    async def set_plan(self, account_id: str, plan: str) -> Account:
        """Move the account to `plan` and start a new cycle with that plan's allowance."""
        target = await self._plans.get(plan)
        await self.get(account_id)
        await self._credits.start_cycle(account_id, plan=target, reason=f"plan set to {plan}")
        return await self.get(account_id)

    async def set_password(self, account_id: str, password: str) -> None:
        if len(password) < MIN_PASSWORD_CHARS:
            raise InvalidRequestError(
                f"The password has {len(password)} characters; use at least {MIN_PASSWORD_CHARS}.",
                field="password",
                code="password_too_short",
            )
        password_hash = hash_password(password)
        async with self._sessions.begin() as session:
            await session.execute(
                update(Account).where(Account.id == account_id).values(password_hash=password_hash)
            )

    async def ensure_account(self, email: str, *, role: str, plan: str) -> Account:
        """Return the account with `email`, creating it on first use; safe in parallel."""
        try:
            return await self.get_by_email(email)
        except NotFoundError:
            pass
        try:
            return await self.create(email, role=role, plan=plan)
        except ConflictError:  # another process made it first
            return await self.get_by_email(email)

    async def ensure_local_account(self, *, plan: str = INTERNAL_PLAN) -> Account:
        """Return the local default account, creating it (as an admin) on first start."""
        return await self.ensure_account(LOCAL_ACCOUNT_EMAIL, role="admin", plan=plan)

    async def ensure_demo_account(self) -> Account:
        """Return the system account that owns demo images."""
        return await self.ensure_account(DEMO_ACCOUNT_EMAIL, role="system", plan=INTERNAL_PLAN)
