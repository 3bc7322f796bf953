"""Accounts: the owners of API keys and images."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import ConflictError, NotFoundError
from app.storage.ids import new_id
from app.storage.tables import Account, utc_now

# The account that owns keys created without `--account`; made on first start.
LOCAL_ACCOUNT_EMAIL = "admin@localhost"


class AccountService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(self, email: str, *, role: str = "user") -> Account:
        email = email.strip().lower()
        account = Account(id=new_id("acct"), email=email, role=role, created_at=utc_now())
        try:
            async with self._sessions.begin() as session:
                session.add(account)
        except IntegrityError:
            raise ConflictError(
                f"An account with the email {email!r} already exists.", code="email_taken"
            ) from None
        return account

    async def get_by_email(self, email: str) -> Account:
        async with self._sessions() as session:
            account = await session.scalar(
                select(Account).where(Account.email == email.strip().lower())
            )
        if account is None:
            raise NotFoundError(f"No account with the email {email!r}.", code="account_not_found")
        return account

    async def ensure_local_account(self) -> Account:
        """Return the local default account, creating it (as an admin) on first start."""
        try:
            return await self.get_by_email(LOCAL_ACCOUNT_EMAIL)
        except NotFoundError:
            pass
        try:
            return await self.create(LOCAL_ACCOUNT_EMAIL, role="admin")
        except ConflictError:  # another process made it first
            return await self.get_by_email(LOCAL_ACCOUNT_EMAIL)
