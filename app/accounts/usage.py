"""Usage reports: images and credits of succeeded generations per UTC day."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import InvalidRequestError
from app.storage.tables import Generation

MAX_USAGE_DAYS = 366


@dataclass(frozen=True)
class UsageRow:
    """Images and credits of one UTC day, for one group (a key, or a plan and a backend)."""

    day: date
    group: tuple[str | None, ...]
    images: int
    credits: int


@dataclass(frozen=True)
class OutcomeRow:
    """Generations finished on one UTC day: how many, how many failed, and their latency.

    `blocked` counts the failures that the safety filters caused, which `failed` includes.
    Latency is over succeeded generations only, in milliseconds, and None on a day without any.
    """

    day: date
    total: int
    failed: int
    blocked: int
    mean_duration_ms: float | None
    max_duration_ms: int | None


def check_range(start: date, end: date) -> None:
    if end < start:
        raise InvalidRequestError(
            f"`to` ({end}) is before `from` ({start}); give an earlier `from`.",
            field="to",
            code="invalid_date_range",
        )
    if (end - start).days + 1 > MAX_USAGE_DAYS:
        raise InvalidRequestError(
            f"The range has {(end - start).days + 1} days; ask for {MAX_USAGE_DAYS} days or fewer.",
            field="from",
            code="invalid_date_range",
        )


def days_between(start: date, end: date) -> list[date]:
    return [start + timedelta(days=offset) for offset in range((end - start).days + 1)]


class UsageService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def by_key(self, account_id: str, start: date, end: date) -> Sequence[UsageRow]:
        """Return the account's usage per UTC day and API key, from `start` to `end` inclusive."""
        return await self._grouped(
            [Generation.api_key_id], start, end, Generation.account_id == account_id
        )

    async def by_plan_and_backend(self, start: date, end: date) -> Sequence[UsageRow]:
        """Return every account's usage per UTC day, plan and backend."""
        return await self._grouped([Generation.plan, Generation.backend], start, end)

    async def _grouped(
        self,
        columns: list[Any],
        start: date,
        end: date,
        *conditions: ColumnElement[bool],
    ) -> list[UsageRow]:
        check_range(start, end)
        async with self._sessions() as session:
            day = utc_day(session, Generation.created_at)
            query = (
                select(
                    day,
                    *columns,
                    func.sum(Generation.image_count),
                    func.sum(Generation.credits),
                )
                .where(
                    Generation.status == "succeeded",
                    Generation.created_at >= datetime.combine(start, time(), UTC),
                    Generation.created_at < datetime.combine(end + timedelta(days=1), time(), UTC),
                    *conditions,
                )
                .group_by(day, *columns)
                .order_by(day, *columns)
            )
            rows = (await session.execute(query)).all()
        width = len(columns)
        return [
            UsageRow(
                day=as_date(row[0]),
                group=tuple(row[1 : 1 + width]),
                images=int(row[1 + width] or 0),
                credits=int(row[2 + width] or 0),
            )
            for row in rows
        ]

    async def outcomes_by_day(self, start: date, end: date) -> list[OutcomeRow]:
        """Return every account's finished generations per UTC day, for error rate and latency."""
        check_range(start, end)
        succeeded = Generation.status == "succeeded"
        async with self._sessions() as session:
            day = utc_day(session, Generation.created_at)
            query = (
                select(
                    day,
                    func.count(),
                    func.sum(case((Generation.status == "failed", 1), else_=0)),
                    func.sum(
                        case((Generation.error_code == "content_policy_violation", 1), else_=0)
                    ),
                    func.avg(case((succeeded, Generation.duration_ms), else_=None)),
                    func.max(case((succeeded, Generation.duration_ms), else_=None)),
                )
                .where(
                    Generation.status.in_(["succeeded", "failed"]),
                    Generation.created_at >= datetime.combine(start, time(), UTC),
                    Generation.created_at < datetime.combine(end + timedelta(days=1), time(), UTC),
                )
                .group_by(day)
                .order_by(day)
            )
            rows = (await session.execute(query)).all()
        return [
            OutcomeRow(
                day=as_date(row[0]),
                total=int(row[1]),
                failed=int(row[2] or 0),
                blocked=int(row[3] or 0),
                mean_duration_ms=float(row[4]) if row[4] is not None else None,
                max_duration_ms=int(row[5]) if row[5] is not None else None,
            )
            for row in rows
        ]


def utc_day(session: AsyncSession, column: Any) -> ColumnElement[Any]:
    """Return an SQL expression for the UTC day of the timestamp `column`."""
    # SQLite stores naive UTC text; PostgreSQL converts timestamptz by the session time zone.
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)


def as_date(value: date | str) -> date:
    """Return a day that SQLite returns as ISO text, or PostgreSQL as a date."""
    return value if isinstance(value, date) else date.fromisoformat(value)
