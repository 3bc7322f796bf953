"""Storage on SQLite and PostgreSQL: migrations, keys, images and account isolation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from opentelemetry.metrics import NoOpMeterProvider
from sqlalchemy import event, inspect

from app.accounts.credits import CreditService
from app.accounts.keys import KeyMode, KeyService, format_key
from app.accounts.metrics import AccountMetrics
from app.accounts.plans import PlanCatalog
from app.accounts.service import AccountService
from app.errors import AuthenticationError, NotFoundError
from app.generation.demo import DemoBackend
from app.generation.options import ImageSize
from app.generation.service import GenerationRequest, GenerationService
from app.storage.blobs import LocalImageStore
from app.storage.database import create_engine, create_session_factory, is_database_current, migrate
from app.storage.tables import utc_now

pytestmark = pytest.mark.anyio
SECRET = b"storage-test-secret"


class Stack:
    def __init__(self, url: str, data_dir: Path) -> None:
        self.engine = create_engine(url)
        self.sessions = create_session_factory(self.engine)
        plans = PlanCatalog(self.sessions)
        metrics = AccountMetrics(NoOpMeterProvider())
        credits = CreditService(self.sessions, plans, metrics, purchase_url="http://test/pricing")
        self.accounts = AccountService(self.sessions, plans, credits)
        self.keys = KeyService(self.sessions, SECRET)
        self.store = LocalImageStore(data_dir / "images")
        self.generation = GenerationService(
            sessions=self.sessions,
            store=self.store,
            backends={"demo": DemoBackend()},
            live_backend="demo",
            backend_timeout_s=30,
            request_timeout_s=60,
        )


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    await migrate(database_url)
    built = Stack(database_url, tmp_path)
    yield built
    await built.engine.dispose()


async def test_migrations_create_every_table(stack: Stack) -> None:
    async with stack.engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))

    assert {"accounts", "api_keys", "generations", "images", "idempotency_records"} <= tables
    assert await is_database_current(stack.engine)


async def test_migrate_twice_is_harmless(stack: Stack) -> None:
    await migrate(str(stack.engine.url.render_as_string(hide_password=False)))

    assert await is_database_current(stack.engine)


async def test_key_round_trip(stack: Stack) -> None:
    account = await stack.accounts.create("owner@example.com")
    created = await stack.keys.create(account.id, name="ci", mode=KeyMode.TEST)
    principal = await stack.keys.authenticate(created.token)

    assert principal.account_id == account.id
    assert principal.is_test
    assert principal.scopes == {"images:generate", "images:read", "keys:manage"}
    assert created.row.secret_hmac not in created.token
    assert created.token.split("_")[3][:32] not in created.row.secret_hmac


async def test_key_secret_is_only_stored_as_hmac(stack: Stack) -> None:
    account = await stack.accounts.create("owner@example.com")
    created = await stack.keys.create(account.id, name="ci")
    rows = await stack.keys.list(account.id)
    secret = created.token.split("_")[3][:32]

    assert len(rows) == 1
    assert all(secret not in str(value) for value in vars(rows[0]).values())


async def test_wrong_secret_with_valid_checksum_is_invalid(stack: Stack) -> None:
    account = await stack.accounts.create("owner@example.com")
    created = await stack.keys.create(account.id, name="ci")
    forged = format_key(KeyMode.LIVE, created.row.id, "Z" * 32)

    with pytest.raises(AuthenticationError) as raised:
        await stack.keys.authenticate(forged)
    assert raised.value.instance_code == "invalid_api_key"


async def test_malformed_key_needs_no_database(stack: Stack) -> None:
    statements: list[str] = []
    event.listen(
        stack.engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2])
    )
    account = await stack.accounts.create("owner@example.com")
    created = await stack.keys.create(account.id, name="ci")
    statements.clear()
    typo = created.token[:20] + ("a" if created.token[20] != "a" else "b") + created.token[21:]

    with pytest.raises(AuthenticationError) as raised:
        await stack.keys.authenticate(typo)
    assert raised.value.instance_code == "malformed_api_key"
    assert statements == []


async def test_revoked_key_is_rejected(stack: Stack) -> None:
    account = await stack.accounts.create("owner@example.com")
    created = await stack.keys.create(account.id, name="ci")
    await stack.keys.revoke(created.row.id)

    with pytest.raises(AuthenticationError) as raised:
        await stack.keys.authenticate(created.token)
    assert raised.value.instance_code == "revoked_api_key"


async def test_revoke_of_other_account_key_is_not_found(stack: Stack) -> None:
    owner = await stack.accounts.create("owner@example.com")
    other = await stack.accounts.create("other@example.com")
    created = await stack.keys.create(owner.id, name="ci")

    with pytest.raises(NotFoundError):
        await stack.keys.revoke(created.row.id, account_id=other.id)


async def test_images_are_isolated_between_accounts(stack: Stack) -> None:
    owner = await stack.accounts.create("owner@example.com")
    other = await stack.accounts.create("other@example.com")
    owner_key = await stack.keys.authenticate((await stack.keys.create(owner.id, name="a")).token)
    outcome = await stack.generation.generate(
        owner_key, GenerationRequest(prompt="harbour", count=2)
    )
    image_id = outcome.images[0].id

    assert len((await stack.generation.list_images(owner.id, limit=10, cursor=None)).images) == 2
    assert (await stack.generation.list_images(other.id, limit=10, cursor=None)).images == []
    with pytest.raises(NotFoundError):
        await stack.generation.get_image(other.id, image_id)
    with pytest.raises(NotFoundError):
        await stack.generation.delete_image(other.id, image_id)
    assert (await stack.generation.get_image(owner.id, image_id)).id == image_id


async def test_retention_deletes_old_images_and_bytes(stack: Stack) -> None:
    owner = await stack.accounts.create("owner@example.com")
    principal = await stack.keys.authenticate((await stack.keys.create(owner.id, name="a")).token)
    old = await stack.generation.generate(
        principal, GenerationRequest(prompt="old", image_size=ImageSize.K1)
    )
    await asyncio.sleep(0.01)
    cutoff = utc_now()
    await asyncio.sleep(0.01)
    fresh = await stack.generation.generate(principal, GenerationRequest(prompt="fresh"))

    deleted = await stack.generation.delete_expired_images(cutoff)

    assert deleted == 1
    remaining = await stack.generation.list_images(owner.id, limit=10, cursor=None)
    assert [image.id for image in remaining.images] == [fresh.images[0].id]
    assert not (stack.store.root / old.images[0].storage_key).exists()
    assert (stack.store.root / fresh.images[0].storage_key).exists()
    assert await stack.generation.delete_expired_images(cutoff - timedelta(days=1)) == 0


async def test_local_account_is_created_once(stack: Stack) -> None:
    first, second = await asyncio.gather(
        stack.accounts.ensure_local_account(), stack.accounts.ensure_local_account()
    )

    assert first.id == second.id
    assert first.role == "admin"
