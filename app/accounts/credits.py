"""Credits: the append-only ledger, the two balances it sums to, and reservations.

An account has two balances. `allowance` is what is left of this cycle's monthly allowance and
expires when the cycle ends; `purchased` contains granted and bought credits and never expires.
Spending takes the allowance first. Every change of a balance adds a ledger entry in the same
transaction, so each balance always equals the sum of its column in the ledger.

Balances change by compare-and-set: read the balances, then update them only if they still
hold the values that were read, and retry when another request changed them in between. The
new balances are never negative, on SQLite and PostgreSQL alike, with no table or row lock
held across the read. A failed compare means another request made progress, so the retry
loop always ends.

A generation reserves its price before the backend is called (a `reservation` entry that
takes the credits), and then either uses it (a reversing `reservation` entry and a `usage`
entry) or is refunded (a `refund` entry). Reservations that a crashed process left behind
are refunded once they are older than the request timeout plus a margin.
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.metrics import AccountMetrics
from app.accounts.plans import PlanCatalog, PlanInfo, Renewal
from app.errors import InsufficientCreditsError, InvalidRequestError, NotFoundError
from app.storage.ids import new_id
from app.storage.tables import Account, CreditLedgerEntry, CreditReservation, utc_now

logger = logging.getLogger(__name__)

MAX_GRANT_CREDITS = 10_000_000
STALE_BATCH_SIZE = 200


class EntryKind:
    GRANT = "grant"
    ALLOWANCE = "allowance"
    PACK_PURCHASE = "pack_purchase"
    RESERVATION = "reservation"
    USAGE = "usage"
    REFUND = "refund"
    EXPIRY = "expiry"
    # Credits taken back from the purchased balance because a pack's payment was refunded.
    PACK_REFUND = "pack_refund"


def add_months(moment: datetime, months: int) -> datetime:
    """Return `moment` moved by whole months, clamped to the last day of a shorter month."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def next_cycle(started_at: datetime, now: datetime) -> tuple[datetime, datetime]:
    """Return the monthly cycle, counted from `started_at`, that contains `now`."""
    months = 1
    while add_months(started_at, months) <= now:
        months += 1
    return add_months(started_at, months - 1), add_months(started_at, months)


@dataclass(frozen=True)
class Balance:
    """An account's credits: the two spendable balances and what is held for generations."""

    allowance: int
    purchased: int
    reserved: int
    cycle_started_at: datetime
    cycle_ends_at: datetime

    @property
    def total(self) -> int:
        return self.allowance + self.purchased


@dataclass
class Reservation:
    """Credits held for one generation, taken from the two balances as `allowance` + `purchased`."""

    id: str
    account_id: str
    credits: int
    allowance: int
    purchased: int


@dataclass(frozen=True)
class _Snapshot:
    account_id: str
    plan: str
    allowance: int
    purchased: int
    cycle_started_at: datetime
    cycle_ends_at: datetime


@dataclass
class _Change:
    """New balances to write if the account still matches the snapshot, and what to record."""

    allowance: int
    purchased: int
    entries: list[CreditLedgerEntry] = field(default_factory=list)
    rows: list[object] = field(default_factory=list)
    values: dict[str, object] = field(default_factory=dict)


class CreditService:
    """Grants, reserves, uses and refunds credits, and renews allowances lazily."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        plans: PlanCatalog,
        metrics: AccountMetrics,
        *,
        purchase_url: str,
    ) -> None:
        self._sessions = sessions
        self._plans = plans
        self._metrics = metrics
        self._purchase_url = purchase_url

    async def balance(self, account_id: str) -> Balance:
        """Return the account's balances, renewing its allowance first if its cycle ended."""
        snapshot = await self._renewed(account_id)
        async with self._sessions() as session:
            reserved = await session.scalar(
                select(func.coalesce(func.sum(CreditReservation.credits), 0)).where(
                    CreditReservation.account_id == account_id,
                    CreditReservation.status == "held",
                )
            )
        return Balance(
            allowance=snapshot.allowance,
            purchased=snapshot.purchased,
            reserved=int(reserved or 0),
            cycle_started_at=snapshot.cycle_started_at,
            cycle_ends_at=snapshot.cycle_ends_at,
        )

    async def reserve(
        self, account_id: str, credits: int, *, generation_id: str, api_key_id: str | None
    ) -> Reservation | None:
        """Hold `credits` for a generation, or raise InsufficientCreditsError (402).

        Returns None when the price is 0, because there is nothing to hold.
        """
        if credits <= 0:
            return None
        while True:
            snapshot = await self._renewed(account_id)
            total = snapshot.allowance + snapshot.purchased
            if total < credits:
                raise InsufficientCreditsError(
                    balance=total, price=credits, purchase_url=self._purchase_url
                )
            from_allowance = min(snapshot.allowance, credits)
            reservation = Reservation(
                id=new_id("rsv"),
                account_id=account_id,
                credits=credits,
                allowance=from_allowance,
                purchased=credits - from_allowance,
            )
            now = utc_now()
            change = _Change(
                allowance=snapshot.allowance - reservation.allowance,
                purchased=snapshot.purchased - reservation.purchased,
                entries=[
                    _entry(
                        account_id,
                        EntryKind.RESERVATION,
                        -reservation.allowance,
                        -reservation.purchased,
                        reason=f"held for generation {generation_id}",
                        reservation_id=reservation.id,
                        created_at=now,
                    )
                ],
                rows=[
                    CreditReservation(
                        id=reservation.id,
                        account_id=account_id,
                        generation_id=generation_id,
                        api_key_id=api_key_id,
                        credits=credits,
                        allowance_credits=reservation.allowance,
                        purchased_credits=reservation.purchased,
                        status="held",
                        created_at=now,
                    )
                ],
            )
            if await self._apply(snapshot, change):
                self._metrics.credits_reserved.add(credits)
                return reservation

    async def use(self, reservation: Reservation) -> bool:
        """Turn a held reservation into usage; return False if it was already settled."""
        async with self._sessions.begin() as session:
            if not await self._settle(session, reservation, "used"):
                logger.warning(
                    "reservation %s of account %s was settled before its generation finished; "
                    "its %s credits were not charged",
                    reservation.id,
                    reservation.account_id,
                    reservation.credits,
                )
                return False
            now = utc_now()
            session.add_all(
                [
                    _entry(
                        reservation.account_id,
                        EntryKind.RESERVATION,
                        reservation.allowance,
                        reservation.purchased,
                        reason="reservation turned into usage",
                        reservation_id=reservation.id,
                        created_at=now,
                    ),
                    _entry(
                        reservation.account_id,
                        EntryKind.USAGE,
                        -reservation.allowance,
                        -reservation.purchased,
                        reservation_id=reservation.id,
                        created_at=now,
                    ),
                ]
            )
        self._metrics.credits_used.add(reservation.credits)
        return True

    async def refund(self, reservation: Reservation, *, reason: str) -> bool:
        """Give a held reservation's credits back; return False if it was already settled."""
        async with self._sessions.begin() as session:
            if not await self._settle(session, reservation, "refunded"):
                return False
            # An increment never makes a balance negative, so it needs no compare-and-set.
            await session.execute(
                update(Account)
                .where(Account.id == reservation.account_id)
                .values(
                    allowance_credits=Account.allowance_credits + reservation.allowance,
                    purchased_credits=Account.purchased_credits + reservation.purchased,
                )
            )
            session.add(
                _entry(
                    reservation.account_id,
                    EntryKind.REFUND,
                    reservation.allowance,
                    reservation.purchased,
                    reason=reason,
                    reservation_id=reservation.id,
                )
            )
        self._metrics.credits_refunded.add(reservation.credits, {"reason": reason})
        return True

    async def release_stale(self, older_than: datetime) -> int:
        """Refund held reservations created before `older_than`; return how many were refunded.

        Only reservations older than any live request can be are stale, so a second process
        that runs this never takes the reservations of generations still running elsewhere.
        """
        released = 0
        while True:
            async with self._sessions() as session:
                rows = list(
                    await session.scalars(
                        select(CreditReservation)
                        .where(
                            CreditReservation.status == "held",
                            CreditReservation.created_at < older_than,
                        )
                        .order_by(CreditReservation.created_at)
                        .limit(STALE_BATCH_SIZE)
                    )
                )
            for row in rows:
                reservation = Reservation(
                    id=row.id,
                    account_id=row.account_id,
                    credits=row.credits,
                    allowance=row.allowance_credits,
                    purchased=row.purchased_credits,
                )
                if await self.refund(reservation, reason="stale"):
                    released += 1
            if len(rows) < STALE_BATCH_SIZE:
                break
        if released:
            logger.warning(
                "released %s stale credit reservations created before %s",
                released,
                older_than.isoformat(),
            )
        return released

    async def grant(
        self,
        account_id: str,
        credits: int,
        *,
        reason: str,
        kind: str = EntryKind.GRANT,
        reference: str | None = None,
    ) -> bool:
        """Add `credits` to the purchased balance, which never expires.

        With `reference` (an invoice or checkout id) the grant happens at most once, because
        the ledger's `reference` column is unique; a repeat returns False.
        """
        if kind not in (EntryKind.GRANT, EntryKind.PACK_PURCHASE):
            raise ValueError(f"grant() adds grants and pack purchases, not {kind!r}")
        if not 1 <= credits <= MAX_GRANT_CREDITS:
            raise InvalidRequestError(
                f"Grant 1 to {MAX_GRANT_CREDITS} credits, not {credits}.",
                field="credits",
                code="invalid_credits",
            )
        reason = reason.strip()
        if not reason or len(reason) > 500:
            raise InvalidRequestError(
                "Give a reason of 1 to 500 characters; it is kept in the ledger.",
                field="reason",
                code="invalid_reason",
            )
        try:
            async with self._sessions.begin() as session:
                result = await session.execute(
                    update(Account)
                    .where(Account.id == account_id)
                    .values(purchased_credits=Account.purchased_credits + credits)
                )
                if result.rowcount != 1:  # type: ignore[attr-defined]
                    raise NotFoundError(
                        f"No account with id {account_id!r}.", code="account_not_found"
                    )
                session.add(
                    _entry(account_id, kind, 0, credits, reason=reason, reference=reference)
                )
        except IntegrityError:
            if reference is None:
                raise
            logger.info("grant %s for account %s was already applied", reference, account_id)
            return False
        self._metrics.credits_granted.add(credits, {"kind": kind})
        return True

    async def start_cycle(
        self,
        account_id: str,
        *,
        plan: PlanInfo | None = None,
        ends_at: datetime | None = None,
        reason: str,
    ) -> None:
        """Start a new cycle now: expire what is left of the allowance, grant the plan's one.

        Used when an account is created or changes plan; `plan` also switches the account to
        that plan. The cycle ends a month from now, or at `ends_at` when it is given.
        """
        while True:
            snapshot = await self._snapshot(account_id)
            target = plan or await self._plans.get(snapshot.plan)
            now = utc_now()
            change = _Change(
                allowance=target.monthly_credits,
                purchased=snapshot.purchased,
                values={
                    "plan": target.name,
                    "cycle_started_at": now,
                    "cycle_ends_at": ends_at or add_months(now, 1),
                },
            )
            change.entries = self._renewal_entries(
                snapshot, target.monthly_credits, reason=reason, now=now
            )
            if await self._apply(snapshot, change):
                self._record_renewal(snapshot.allowance, target.monthly_credits)
                return

    async def ledger_totals(self, account_id: str) -> tuple[int, int]:
        """Return the sums of the ledger's allowance and purchased columns for the account."""
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(
                        func.coalesce(func.sum(CreditLedgerEntry.allowance_amount), 0),
                        func.coalesce(func.sum(CreditLedgerEntry.purchased_amount), 0),
                    ).where(CreditLedgerEntry.account_id == account_id)
                )
            ).one()
        return int(row[0]), int(row[1])

    async def entries(self, account_id: str, *, limit: int = 100) -> Sequence[CreditLedgerEntry]:
        """Return the account's newest ledger entries, newest first."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(CreditLedgerEntry)
                .where(CreditLedgerEntry.account_id == account_id)
                .order_by(CreditLedgerEntry.id.desc())
                .limit(limit)
            )
            return list(rows)

    async def _renewed(self, account_id: str) -> _Snapshot:
        """Read the account, first renewing its allowance when the cycle has ended."""
        while True:
            snapshot = await self._snapshot(account_id)
            now = utc_now()
            if snapshot.cycle_ends_at > now:
                return snapshot
            plan = await self._plans.get(snapshot.plan)
            granted = plan.monthly_credits if plan.renewal == Renewal.CYCLE else 0
            started_at, ends_at = next_cycle(snapshot.cycle_ends_at, now)
            change = _Change(
                allowance=granted,
                purchased=snapshot.purchased,
                entries=self._renewal_entries(
                    snapshot, granted, reason="monthly allowance", now=now
                ),
                values={"cycle_started_at": started_at, "cycle_ends_at": ends_at},
            )
            if await self._apply(snapshot, change):
                self._record_renewal(snapshot.allowance, granted)

    @staticmethod
    def _renewal_entries(
        snapshot: _Snapshot, granted: int, *, reason: str, now: datetime
    ) -> list[CreditLedgerEntry]:
        entries = []
        if snapshot.allowance > 0:
            entries.append(
                _entry(
                    snapshot.account_id,
                    EntryKind.EXPIRY,
                    -snapshot.allowance,
                    0,
                    reason=f"allowance of the cycle ending {snapshot.cycle_ends_at:%Y-%m-%d}",
                    created_at=now,
                )
            )
        if granted > 0:
            entries.append(
                _entry(
                    snapshot.account_id,
                    EntryKind.ALLOWANCE,
                    granted,
                    0,
                    reason=reason,
                    created_at=now,
                )
            )
        return entries

    def _record_renewal(self, expired: int, granted: int) -> None:
        if expired:
            self._metrics.credits_expired.add(expired)
        if granted:
            self._metrics.credits_granted.add(granted, {"kind": EntryKind.ALLOWANCE})

    async def _snapshot(self, account_id: str) -> _Snapshot:
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(
                        Account.plan,
                        Account.allowance_credits,
                        Account.purchased_credits,
                        Account.cycle_started_at,
                        Account.cycle_ends_at,
                    ).where(Account.id == account_id)
                )
            ).first()
        if row is None:
            raise NotFoundError(f"No account with id {account_id!r}.", code="account_not_found")
        return _Snapshot(account_id, row[0], row[1], row[2], row[3], row[4])

    async def _apply(self, snapshot: _Snapshot, change: _Change) -> bool:
        """Write `change` if the account still matches `snapshot`; return whether it did."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(Account)
                .where(
                    Account.id == snapshot.account_id,
                    Account.allowance_credits == snapshot.allowance,
                    Account.purchased_credits == snapshot.purchased,
                    Account.cycle_ends_at == snapshot.cycle_ends_at,
                )
                .values(
                    allowance_credits=change.allowance,
                    purchased_credits=change.purchased,
                    **change.values,
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return False
            session.add_all(change.rows)
            await session.flush()
            session.add_all(change.entries)
        return True

    @staticmethod
    async def _settle(session: AsyncSession, reservation: Reservation, status: str) -> bool:
        result = await session.execute(
            update(CreditReservation)
            .where(CreditReservation.id == reservation.id, CreditReservation.status == "held")
            .values(status=status, settled_at=utc_now())
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _entry(
    account_id: str,
    kind: str,
    allowance_amount: int,
    purchased_amount: int,
    *,
    reason: str | None = None,
    reservation_id: str | None = None,
    reference: str | None = None,
    created_at: datetime | None = None,
    shortfall: int | None = None,
) -> CreditLedgerEntry:
    return CreditLedgerEntry(
        account_id=account_id,
        kind=kind,
        amount=allowance_amount + purchased_amount,
        allowance_amount=allowance_amount,
        purchased_amount=purchased_amount,
        reason=reason,
        reservation_id=reservation_id,
        reference=reference,
        created_at=created_at or utc_now(),
        shortfall=shortfall,
    )


def stale_cutoff(now: datetime, *, request_timeout_s: float, margin_s: float) -> datetime:
    """Return the creation time before which a held reservation can belong to no live request."""
    return now - timedelta(seconds=request_timeout_s + margin_s)


# Changes made inside the caller's transaction, for billing. The caller locks the account row
# with `lock_account` first, so the balances read here cannot change before the commit. The
# ledger entries commit or roll back together with the caller's own rows.


@dataclass(frozen=True)
class AllowanceChange:
    """The result of a renewal or plan change: the allowance that expired and the one granted."""

    expired: int
    granted: int


@dataclass(frozen=True)
class TakeBack:
    """Credits a refund took back from the purchased balance, and those it could not."""

    taken: int
    shortfall: int


async def lock_account(session: AsyncSession, account_id: str) -> Account:
    """Read the account and lock its row until the transaction ends (SQLite locks on write)."""
    account = await session.scalar(
        select(Account).where(Account.id == account_id).with_for_update()
    )
    if account is None:
        raise NotFoundError(f"No account with id {account_id!r}.", code="account_not_found")
    return account


async def renew_paid_allowance(
    session: AsyncSession,
    account: Account,
    plan: PlanInfo,
    *,
    credits: int,
    started_at: datetime,
    ends_at: datetime,
    reference: str | None,
    reason: str,
) -> AllowanceChange:
    """Move a locked account to `plan` for a paid period and replace its allowance with `credits`.

    What is left of the old allowance expires. The allowance entry carries `reference` (the
    invoice id), so the ledger rejects a second renewal for the same invoice.
    """
    snapshot = _snapshot_of(account)
    entries = CreditService._renewal_entries(snapshot, credits, reason=reason, now=utc_now())
    for entry in entries:
        if entry.kind == EntryKind.ALLOWANCE and reference is not None:
            entry.reference = reference
    account.plan = plan.name
    account.allowance_credits = credits
    account.cycle_started_at = started_at
    account.cycle_ends_at = ends_at
    session.add_all(entries)
    await session.flush()
    return AllowanceChange(expired=snapshot.allowance, granted=credits)


async def restart_cycle(
    session: AsyncSession, account: Account, plan: PlanInfo, *, reason: str
) -> AllowanceChange:
    """Move a locked account to `plan` with a new monthly cycle that starts now."""
    now = utc_now()
    return await renew_paid_allowance(
        session,
        account,
        plan,
        credits=plan.monthly_credits,
        started_at=now,
        ends_at=add_months(now, 1),
        reference=None,
        reason=reason,
    )


async def add_purchased(
    session: AsyncSession, account: Account, credits: int, *, reference: str, reason: str
) -> None:
    """Add bought credits to a locked account; the ledger's unique `reference` makes it once."""
    account.purchased_credits += credits
    session.add(
        _entry(account.id, EntryKind.PACK_PURCHASE, 0, credits, reason=reason, reference=reference)
    )
    await session.flush()


async def take_back_purchased(
    session: AsyncSession, account: Account, credits: int, *, reference: str, reason: str
) -> TakeBack:
    """Take up to `credits` from a locked account's purchased balance, never below zero.

    The credits the balance cannot cover (spent already) are recorded as the entry's shortfall.
    """
    taken = min(credits, account.purchased_credits)
    shortfall = credits - taken
    account.purchased_credits -= taken
    session.add(
        _entry(
            account.id,
            EntryKind.PACK_REFUND,
            0,
            -taken,
            reason=reason,
            reference=reference,
            shortfall=shortfall,
        )
    )
    await session.flush()
    return TakeBack(taken=taken, shortfall=shortfall)


def _snapshot_of(account: Account) -> _Snapshot:
    return _Snapshot(
        account.id,
        account.plan,
        account.allowance_credits,
        account.purchased_credits,
        account.cycle_started_at,
        account.cycle_ends_at,
    )
