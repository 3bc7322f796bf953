"""The credit ledger on SQLite and PostgreSQL: reservations, renewals, grants, stale releases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from conftest import make_settings
from sqlalchemy import select, text, update

from app.accounts.credits import add_months, next_cycle
from app.accounts.keys import KeyMode, format_key, hash_secret
from app.container import Services, build_services
from app.errors import InsufficientCreditsError
from app.generation.options import ImageSize
from app.generation.service import GenerationRequest
from app.storage.database import alembic_config, create_engine, migrate
from app.storage.tables import Account, CreditLedgerEntry, CreditReservation, utc_now

pytestmark = pytest.mark.anyio


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    await migrate(database_url)
    built = build_services(make_settings(tmp_path, database_url=database_url))
    yield built
    await built.aclose()


async def _assert_ledger_matches(services: Services, account_id: str) -> None:
    account = await services.accounts.get(account_id)
    allowance_sum, purchased_sum = await services.credits.ledger_totals(account_id)

    assert allowance_sum == account.allowance_credits
    assert purchased_sum == account.purchased_credits


async def _kinds(services: Services, account_id: str) -> list[tuple[str, int]]:
    entries = await services.credits.entries(account_id)
    return [(entry.kind, entry.amount) for entry in reversed(entries)]


async def test_new_free_account_gets_allowance(services: Services) -> None:
    account = await services.accounts.create("new@example.com")
    balance = await services.credits.balance(account.id)

    assert account.plan == "free"
    assert (balance.allowance, balance.purchased, balance.reserved) == (50, 0, 0)
    assert balance.cycle_ends_at == add_months(balance.cycle_started_at, 1)
    assert await _kinds(services, account.id) == [("allowance", 50)]
    await _assert_ledger_matches(services, account.id)


async def test_spending_takes_allowance_first(services: Services) -> None:
    account = await services.accounts.create("spender@example.com")
    await services.credits.grant(account.id, 30, reason="welcome")

    first = await services.credits.reserve(account.id, 40, generation_id="gen_a", api_key_id=None)
    second = await services.credits.reserve(account.id, 20, generation_id="gen_b", api_key_id=None)
    balance = await services.credits.balance(account.id)

    assert first is not None and (first.allowance, first.purchased) == (40, 0)
    assert second is not None and (second.allowance, second.purchased) == (10, 10)
    assert (balance.allowance, balance.purchased, balance.reserved) == (0, 20, 60)
    await _assert_ledger_matches(services, account.id)


async def test_use_and_refund_settle_once(services: Services) -> None:
    account = await services.accounts.create("settle@example.com")
    used = await services.credits.reserve(account.id, 5, generation_id="gen_a", api_key_id=None)
    refunded = await services.credits.reserve(account.id, 7, generation_id="gen_b", api_key_id=None)
    assert used is not None and refunded is not None

    assert await services.credits.use(used) is True
    assert await services.credits.refund(refunded, reason="failure") is True
    assert await services.credits.refund(used, reason="failure") is False
    assert await services.credits.use(refunded) is False
    balance = await services.credits.balance(account.id)

    assert (balance.allowance, balance.reserved) == (45, 0)
    assert await _kinds(services, account.id) == [
        ("allowance", 50),
        ("reservation", -5),
        ("reservation", -7),
        ("reservation", 5),
        ("usage", -5),
        ("refund", 7),
    ]
    await _assert_ledger_matches(services, account.id)


async def test_reserve_over_balance_is_402(services: Services) -> None:
    account = await services.accounts.create("poor@example.com")

    with pytest.raises(InsufficientCreditsError) as raised:
        await services.credits.reserve(account.id, 51, generation_id="gen_a", api_key_id=None)

    assert raised.value.extra["balance"] == 50
    assert raised.value.extra["price"] == 51
    assert raised.value.extra["purchase_url"].endswith("/pricing")
    assert (await services.credits.balance(account.id)).allowance == 50


async def test_parallel_reservations_never_overdraw(services: Services) -> None:
    account = await services.accounts.create("race@example.com", plan="unlimited")
    await services.credits.grant(account.id, 10, reason="exactly ten")

    async def reserve_one(index: int) -> bool:
        try:
            await services.credits.reserve(
                account.id, 1, generation_id=f"gen_{index}", api_key_id=None
            )
        except InsufficientCreditsError:
            return False
        return True

    outcomes = await asyncio.gather(*(reserve_one(index) for index in range(30)))
    balance = await services.credits.balance(account.id)

    assert outcomes.count(True) == 10
    assert (balance.purchased, balance.reserved) == (0, 10)
    await _assert_ledger_matches(services, account.id)


async def _end_cycle(services: Services, account_id: str, *, days_ago: int) -> None:
    async with services.sessions.begin() as session:
        await session.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(cycle_ends_at=utc_now() - timedelta(days=days_ago))
        )


async def test_free_allowance_renews_lazily_and_expires(services: Services) -> None:
    account = await services.accounts.create("renew@example.com")
    await services.credits.grant(account.id, 8, reason="bought")
    reservation = await services.credits.reserve(
        account.id, 20, generation_id="gen_a", api_key_id=None
    )
    assert reservation is not None
    await services.credits.use(reservation)
    await _end_cycle(services, account.id, days_ago=40)

    balances = await asyncio.gather(*(services.credits.balance(account.id) for _ in range(5)))
    kinds = await _kinds(services, account.id)

    assert {(balance.allowance, balance.purchased) for balance in balances} == {(50, 8)}
    assert kinds[-2:] == [("expiry", -30), ("allowance", 50)]
    assert [kind for kind, _ in kinds].count("allowance") == 2
    assert balances[0].cycle_started_at <= utc_now() < balances[0].cycle_ends_at
    await _assert_ledger_matches(services, account.id)


async def test_paid_plan_allowance_expires_without_renewing(services: Services) -> None:
    account = await services.accounts.create("pro@example.com", plan="pro")
    await _end_cycle(services, account.id, days_ago=1)

    balance = await services.credits.balance(account.id)

    assert balance.allowance == 0
    assert (await _kinds(services, account.id))[-1] == ("expiry", -1000)
    await _assert_ledger_matches(services, account.id)


async def test_set_plan_starts_a_new_cycle(services: Services) -> None:
    account = await services.accounts.create("upgrade@example.com")
    moved = await services.accounts.set_plan(account.id, "pro")

    assert moved.plan == "pro"
    assert moved.allowance_credits == 1000
    assert (await _kinds(services, account.id))[-2:] == [("expiry", -50), ("allowance", 1000)]
    await _assert_ledger_matches(services, account.id)


async def test_grant_with_reference_applies_once(services: Services) -> None:
    account = await services.accounts.create("buyer@example.com")

    first = await services.credits.grant(
        account.id, 100, reason="pack", kind="pack_purchase", reference="cs_test_1"
    )
    again = await services.credits.grant(
        account.id, 100, reason="pack", kind="pack_purchase", reference="cs_test_1"
    )

    assert (first, again) == (True, False)
    assert (await services.credits.balance(account.id)).purchased == 100
    await _assert_ledger_matches(services, account.id)


async def test_stale_release_spares_young_reservations(services: Services) -> None:
    account = await services.accounts.create("stale@example.com")
    old = await services.credits.reserve(account.id, 3, generation_id="gen_old", api_key_id=None)
    young = await services.credits.reserve(
        account.id, 4, generation_id="gen_young", api_key_id=None
    )
    assert old is not None and young is not None
    async with services.sessions.begin() as session:
        await session.execute(
            update(CreditReservation)
            .where(CreditReservation.id == old.id)
            .values(created_at=utc_now() - timedelta(minutes=10))
        )

    released = await services.credits.release_stale(utc_now() - timedelta(minutes=5))
    async with services.sessions() as session:
        statuses = dict(
            (await session.execute(select(CreditReservation.id, CreditReservation.status))).all()
        )

    assert released == 1
    assert statuses == {old.id: "refunded", young.id: "held"}
    assert (await services.credits.balance(account.id)).allowance == 46
    await _assert_ledger_matches(services, account.id)


async def test_ledger_rows_are_only_added(services: Services) -> None:
    account = await services.accounts.create("append@example.com")
    reservation = await services.credits.reserve(
        account.id, 2, generation_id="gen_a", api_key_id=None
    )
    assert reservation is not None
    async with services.sessions() as session:
        before = list(
            await session.execute(
                select(CreditLedgerEntry.id, CreditLedgerEntry.kind, CreditLedgerEntry.amount)
            )
        )
    await services.credits.use(reservation)
    async with services.sessions() as session:
        after = list(
            await session.execute(
                select(CreditLedgerEntry.id, CreditLedgerEntry.kind, CreditLedgerEntry.amount)
            )
        )

    assert after[: len(before)] == before
    assert len(after) == len(before) + 2


def test_next_cycle_counts_whole_months() -> None:
    start = utc_now().replace(year=2026, month=1, day=31, hour=12)
    now = start.replace(month=4, day=1)

    assert add_months(start, 1).date().isoformat() == "2026-02-28"
    assert next_cycle(start, now) == (add_months(start, 2), add_months(start, 3))


OLD_ACCOUNT_ID = "acct_01JF3M8X4Q7R2ZC5VYBTNWKD0E"
OLD_KEY_ID = "AAAAAAAAAAAAAAAA"
OLD_GENERATION_ID = "gen_01JF3M8X4Q7R2ZC5VYBTNWKD0E"
OLD_IMAGE_ID = "img_01JF3M8X4Q7R2ZC5VYBTNWKD0E"
# Rows as the first migration's tables hold them, written without the current models.
OLD_ROWS = [
    (
        "INSERT INTO accounts (id, email, role, created_at) VALUES "
        "(:id, 'admin@localhost', 'admin', '2026-11-01 00:00:00'), "
        "('acct_01JF3M8X4Q7R2ZC5VYBTNWKD0F', 'user@example.com', 'user', '2026-11-01 00:00:00')"
    ),
    (
        "INSERT INTO api_keys (id, account_id, name, mode, secret_hmac, last_chars, scopes, "
        "created_at) VALUES (:key_id, :id, 'old', 'live', :secret_hmac, 'xxxx', "
        "'images:generate images:read keys:manage', '2026-11-01 00:00:00')"
    ),
    (
        "INSERT INTO generations (id, account_id, status, backend, model, prompt, aspect_ratio, "
        "image_size, image_count, seed, created_at) VALUES (:generation_id, :id, 'succeeded', "
        "'demo', 'demo', 'kite', '1:1', '1K', 1, 1, '2026-11-02 00:00:00')"
    ),
    (
        "INSERT INTO images (id, generation_id, account_id, position, width, height, seed, "
        "content_type, size_bytes, sha256, storage_key, created_at) VALUES (:image_id, "
        ":generation_id, :id, 0, 1024, 1024, 1, 'image/png', 10, 'x', 'k', "
        "'2026-11-02 00:00:00')"
    ),
]


async def _insert_old_rows(url: str, secret_key: bytes) -> None:
    values = {
        "id": OLD_ACCOUNT_ID,
        "key_id": OLD_KEY_ID,
        "secret_hmac": hash_secret("B" * 32, secret_key),
        "generation_id": OLD_GENERATION_ID,
        "image_id": OLD_IMAGE_ID,
    }
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in OLD_ROWS:
                names = [name for name in values if f":{name}" in statement]
                await connection.execute(text(statement), {name: values[name] for name in names})
    finally:
        await engine.dispose()


def test_existing_rows_survive_the_migration(database_url: str, tmp_path: Path) -> None:
    command.upgrade(alembic_config(database_url), "0001")
    settings = make_settings(tmp_path, database_url=database_url)
    asyncio.run(_insert_old_rows(database_url, settings.resolved_secret_key))
    command.upgrade(alembic_config(database_url), "head")
    token = format_key(KeyMode.LIVE, OLD_KEY_ID, "B" * 32)

    async def read_back() -> tuple[str, str, int, list[str], dict[str, str]]:
        services = build_services(settings)
        try:
            principal = await services.keys.authenticate(token)
            balance = await services.credits.balance(principal.account_id)
            images = await services.generation.list_images(OLD_ACCOUNT_ID, limit=10, cursor=None)
            async with services.sessions() as session:
                plans = dict((await session.execute(select(Account.email, Account.plan))).all())
            return (
                principal.account_id,
                principal.plan,
                balance.total,
                [image.id for image in images.images],
                plans,
            )
        finally:
            await services.aclose()

    account_id, plan, total, image_ids, plans = asyncio.run(read_back())

    assert account_id == OLD_ACCOUNT_ID
    assert plan == "unlimited"
    assert total == 0
    assert image_ids == [OLD_IMAGE_ID]
    assert plans == {"admin@localhost": "unlimited", "user@example.com": "free"}


async def test_usage_groups_by_utc_day(services: Services) -> None:
    account = await services.accounts.create("usage@example.com")
    created = await services.keys.create(account.id, name="ci")
    principal = await services.keys.authenticate(created.token)
    before = utc_now()
    await services.generation.generate(principal, GenerationRequest(prompt="kite", count=2))
    await services.generation.generate(
        principal, GenerationRequest(prompt="kite", image_size=ImageSize.K2)
    )
    after = utc_now()
    if before.date() != after.date():
        pytest.skip("the generations ran across midnight UTC; their days differ")
    today = before.date()

    by_key = await services.usage.by_key(account.id, today - timedelta(days=1), today)
    by_plan = await services.usage.by_plan_and_backend(today, today)

    assert [(row.day, row.group, row.images, row.credits) for row in by_key] == [
        (today, (created.row.id,), 3, 4)
    ]
    assert [(row.group, row.images, row.credits) for row in by_plan] == [(("free", "demo"), 3, 4)]
    assert (await services.credits.balance(account.id)).allowance == 46
