"""Accounts: the owners of API keys and images, each on a plan with a role.

Roles: `user`, `admin` (may hold keys with the `admin` scope), and `system` for the account
that owns demo images, which has no keys and no history of its own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.credits import CreditService
from app.accounts.passwords import (
    check_password_strength,
    dummy_hash,
    hash_password,
    needs_rehash,
    verify_password,
)
from app.accounts.plans import PlanCatalog
from app.errors import ConflictError, InvalidRequestError, NotFoundError, PermissionDeniedError
from app.storage.ids import is_valid_id, new_id
from app.storage.tables import Account, utc_now

# The account that owns keys created without `--account`; made on first start.
LOCAL_ACCOUNT_EMAIL = "admin@localhost"
# The account that owns the images of the demo page; it has no keys.
DEMO_ACCOUNT_EMAIL = "demo@visioncraft.invalid"
INTERNAL_PLAN = "unlimited"
DEFAULT_PLAN = "free"
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+$")
# An account's email address is searched by substring; this many characters at most.
MAX_SEARCH_CHARS = 100


@dataclass(frozen=True)
class LoginFailure:
    """Why a log-in failed: `unknown` (no such email or a wrong password) or `unverified`."""

    reason: str


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

    async def create(
        self,
        email: str,
        *,
        role: str = "user",
        plan: str = DEFAULT_PLAN,
        password: str | None = None,
        verified: bool = True,
    ) -> Account:
        """Create an account on `plan` and grant the plan's first monthly allowance.

        Accounts made by an operator count as verified; a web sign-up passes `verified=False`
        until its owner follows the emailed link. A `password` is checked and hashed first.
        """
        email = normalize_email(email) if role != "system" else email
        password_hash = None
        if password is not None:
            check_password_strength(password, email=email)
            password_hash = await asyncio.to_thread(hash_password, password)
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
            password_hash=password_hash,
            email_verified_at=now if verified else None,
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
        self,
        *,
        limit: int = 100,
        cursor: str | None = None,
        include_system: bool = False,
        search: str | None = None,
    ) -> Sequence[Account]:
        """Return accounts oldest first; `cursor` is the last id of the previous page.

        `search` keeps the accounts whose email address contains it, ignoring case.
        """
        query = select(Account).order_by(Account.id).limit(limit)
        if cursor is not None:
            query = query.where(Account.id > cursor)
        if search:
            pattern = search.strip().lower()[:MAX_SEARCH_CHARS]
            escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(func.lower(Account.email).like(f"%{escaped}%", escape="\\"))
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
        """Check the password's strength, then store its Argon2id hash."""
        account = await self.get(account_id)
        check_password_strength(password, email=account.email)
        password_hash = await asyncio.to_thread(hash_password, password)
        async with self._sessions.begin() as session:
            await session.execute(
                update(Account).where(Account.id == account_id).values(password_hash=password_hash)
            )

    async def check_login(self, email: str, password: str) -> Account | LoginFailure:
        """Return the account whose email and password match, or why the log-in failed.

        A wrong email costs as much time as a wrong password, and an old scrypt hash is
        replaced by an Argon2id one on success.
        """
        try:
            account: Account | None = await self.get_by_email(email)
        except NotFoundError:
            account = None
        stored = account.password_hash if account is not None else None
        matches = await asyncio.to_thread(verify_password, password, stored or dummy_hash())
        if account is None or stored is None or not matches or account.role == "system":
            return LoginFailure("unknown")
        if account.email_verified_at is None:
            return LoginFailure("unverified")
        if needs_rehash(stored):
            await self._replace_hash(account.id, stored, password)
        return account

    async def _replace_hash(self, account_id: str, old_hash: str, password: str) -> None:
        new_hash = await asyncio.to_thread(hash_password, password)
        async with self._sessions.begin() as session:
            # Only when nobody changed the password meanwhile.
            await session.execute(
                update(Account)
                .where(Account.id == account_id, Account.password_hash == old_hash)
                .values(password_hash=new_hash)
            )

    async def mark_verified(
        self, account_id: str, email: str, *, now: datetime | None = None
    ) -> Account:
        """Record that the owner of `email` confirmed it; a changed address is not confirmed."""
        account = await self.get(account_id)
        if account.email != email:
            raise NotFoundError(
                f"No account with id {account_id!r} has the email {email!r}.",
                code="account_not_found",
            )
        if account.email_verified_at is None:
            async with self._sessions.begin() as session:
                await session.execute(
                    update(Account)
                    .where(Account.id == account_id)
                    .values(email_verified_at=now or utc_now())
                )
        return await self.get(account_id)

    async def delete(self, account_id: str) -> None:
        """Delete the account row; its keys, sessions, generations, images and ledger go with it.

        The image bytes live outside the database: delete them first through the generation
        service (`delete_account_images`).
        """
        account = await self.get(account_id)
        if account.role == "system":
            raise PermissionDeniedError(
                f"The account {account.email} is used by the service itself and cannot be deleted.",
                code="system_account",
            )
        async with self._sessions.begin() as session:
            await session.execute(delete(Account).where(Account.id == account_id))

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
