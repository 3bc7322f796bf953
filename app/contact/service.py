"""Contact messages: validate, rate-limit per client address, store, and list for the admins."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import InvalidRequestError, RateLimitedError
from app.storage.ids import new_id
from app.storage.tables import ContactMessage, utc_now

logger = logging.getLogger(__name__)

MAX_NAME_CHARS = 100
MAX_EMAIL_CHARS = 320
MAX_MESSAGE_CHARS = 5000
RATE_WINDOW = timedelta(hours=1)
MAX_PAGE_SIZE = 100
# One @, something on each side and a dot in the domain: enough to catch a typo; the reply
# itself is the real check.
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class FieldProblem:
    """A problem with one form field: a stable `code`, and the `limit` it broke, if any."""

    field: str
    code: str
    limit: int | None = None


class ContactMessageInvalid(InvalidRequestError):
    """One or more fields of a contact message are missing, too long or malformed."""

    code = "invalid_contact_message"

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        fields = ", ".join(problem.field for problem in problems)
        super().__init__(
            f"The contact message has invalid fields: {fields}. Correct them and send it again.",
            field=problems[0].field,
            errors=[{"field": problem.field, "code": problem.code} for problem in problems],
        )
        self.problems = list(problems)


@dataclass(frozen=True)
class ContactDraft:
    """A contact message as the sender typed it."""

    name: str
    email: str
    message: str


def _check_length(field: str, value: str, max_chars: int) -> FieldProblem | None:
    if not value:
        return FieldProblem(field, "missing")
    if len(value) > max_chars:
        return FieldProblem(field, "too_long", limit=max_chars)
    return None


def check_draft(draft: ContactDraft) -> list[FieldProblem]:
    """Return the problems of a draft whose fields are already stripped; empty when it is valid."""
    problems = [
        _check_length("name", draft.name, MAX_NAME_CHARS),
        _check_length("email", draft.email, MAX_EMAIL_CHARS),
        _check_length("message", draft.message, MAX_MESSAGE_CHARS),
    ]
    if problems[1] is None and not EMAIL_PATTERN.match(draft.email):
        problems[1] = FieldProblem("email", "invalid")
    return [problem for problem in problems if problem is not None]


class ContactService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, max_per_hour: int) -> None:
        self._sessions = sessions
        self.max_per_hour = max_per_hour

    async def submit(
        self,
        draft: ContactDraft,
        *,
        locale: str,
        client_address: str,
        now: datetime | None = None,
    ) -> ContactMessage:
        """Store a message, or raise ContactMessageInvalid or RateLimitedError.

        The limit counts stored messages per address in the last hour, so it applies across
        replicas. Two messages sent at the same instant may both pass the check.
        """
        now = now or utc_now()
        draft = ContactDraft(draft.name.strip(), draft.email.strip(), draft.message.strip())
        problems = check_draft(draft)
        if problems:
            raise ContactMessageInvalid(problems)
        async with self._sessions.begin() as session:
            await self._check_rate(session, client_address, now)
            message = ContactMessage(
                id=new_id("msg"),
                name=draft.name,
                email=draft.email,
                message=draft.message,
                locale=locale,
                client_address=client_address[:64],
                created_at=now,
            )
            session.add(message)
        logger.info("contact message %s stored", message.id)
        return message

    async def _check_rate(self, session: AsyncSession, client_address: str, now: datetime) -> None:
        window_start = now - RATE_WINDOW
        count, oldest = (
            await session.execute(
                select(func.count(), func.min(ContactMessage.created_at)).where(
                    ContactMessage.client_address == client_address[:64],
                    ContactMessage.created_at > window_start,
                )
            )
        ).one()
        if count < self.max_per_hour:
            return
        retry_after_s = max(1.0, (oldest + RATE_WINDOW - now).total_seconds())
        raise RateLimitedError(
            f"{count} contact messages were sent from this address in the last hour; the limit "
            f"is {self.max_per_hour}. Try again in {round(retry_after_s / 60) or 1} minutes.",
            retry_after_s=retry_after_s,
            code="contact_rate_limited",
        )

    async def list_messages(
        self, *, limit: int = 50, before_id: str | None = None
    ) -> list[ContactMessage]:
        """Return up to `limit` messages, newest first; pass the last id as `before_id` for more."""
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        query = select(ContactMessage).order_by(ContactMessage.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(ContactMessage.id < before_id)
        async with self._sessions() as session:
            return list(await session.scalars(query))
