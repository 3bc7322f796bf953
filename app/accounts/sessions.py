"""Server-side browser sessions: a random token in a cookie, its SHA-256 in the database.

A session ends at logout, after `idle_timeout_s` without a request, at `max_age_s` after it
started however active it is, and when its account is deleted. Log-in always starts a new
session, so a session id planted before log-in is useless afterwards.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.storage.tables import Account, BrowserSession, utc_now

TOKEN_BYTES = 32
LAST_SEEN_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class SessionAccount:
    """A live session and the account behind it, as each request needs them."""

    session_id: str
    account_id: str
    email: str
    role: str
    plan: str
    expires_at: datetime


@dataclass(frozen=True)
class StartedSession:
    """A new session: `token` goes into the cookie and is never stored."""

    token: str
    session_id: str
    expires_at: datetime


def session_id_of(token: str) -> str:
    """Return the stored id of a session token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


class BrowserSessionService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        idle_timeout_s: float,
        max_age_s: float,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self.idle_timeout = timedelta(seconds=idle_timeout_s)
        self.max_age = timedelta(seconds=max_age_s)
        self._clock = clock

    async def start(self, account_id: str, *, replacing: str | None = None) -> StartedSession:
        """Start a session for the account; the session with token `replacing` ends."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self._clock()
        row = BrowserSession(
            id=session_id_of(token),
            account_id=account_id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + self.max_age,
        )
        async with self._sessions.begin() as session:
            if replacing:
                await session.execute(
                    delete(BrowserSession).where(BrowserSession.id == session_id_of(replacing))
                )
            session.add(row)
        return StartedSession(token=token, session_id=row.id, expires_at=row.expires_at)

    async def resolve(self, token: str) -> SessionAccount | None:
        """Return the live session of `token`, or None when it is unknown or has ended."""
        now = self._clock()
        async with self._sessions() as session:
            found = (
                await session.execute(
                    select(BrowserSession, Account)
                    .join(Account, Account.id == BrowserSession.account_id)
                    .where(BrowserSession.id == session_id_of(token))
                )
            ).first()
        if found is None:
            return None
        row, account = found
        if row.expires_at <= now or now - row.last_seen_at > self.idle_timeout:
            await self.end(token)
            return None
        if now - row.last_seen_at >= LAST_SEEN_RESOLUTION:
            async with self._sessions.begin() as session:
                await session.execute(
                    update(BrowserSession)
                    .where(BrowserSession.id == row.id)
                    .values(last_seen_at=now)
                )
        return SessionAccount(
            session_id=row.id,
            account_id=account.id,
            email=account.email,
            role=account.role,
            plan=account.plan,
            expires_at=row.expires_at,
        )

    async def end(self, token: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                delete(BrowserSession).where(BrowserSession.id == session_id_of(token))
            )

    async def end_all(self, account_id: str) -> int:
        """End every session of the account, as after a password reset; return how many."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(BrowserSession).where(BrowserSession.account_id == account_id)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def delete_expired(self) -> int:
        """Delete sessions past their absolute end or idle for longer than the timeout."""
        now = self._clock()
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(BrowserSession).where(
                    (BrowserSession.expires_at <= now)
                    | (BrowserSession.last_seen_at < now - self.idle_timeout)
                )
            )
        return int(getattr(result, "rowcount", 0) or 0)
