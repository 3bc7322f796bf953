"""The async database engine and session factory, for SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30


def create_engine(url: str, *, pool_size: int = 10, pre_ping: bool = True) -> AsyncEngine:
    """Create the engine; on SQLite turn on WAL, foreign keys and a busy timeout per connection.

    `pre_ping` tests each pooled PostgreSQL connection before use, at the cost of a round trip.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(
            url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping
        )

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the one writer; busy_timeout makes writers queue, not fail.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def insert_if_absent(session: AsyncSession, model: Any, values: dict[str, Any]) -> bool:
    """Insert a row unless one with the same primary or unique key exists; return whether it did.

    Two transactions that insert the same key at once both succeed: one inserts, the other
    waits for it (PostgreSQL) or for the write lock (SQLite) and then inserts nothing.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    result = await session.execute(insert(model).values(**values).on_conflict_do_nothing())
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(url: str) -> None:
    """Apply every pending migration (blocking; call it from a thread inside an event loop)."""
    command.upgrade(alembic_config(url), "head")


class DatabaseNotMigratedError(RuntimeError):
    """The database is older than this release: `visioncraft migrate` has not run yet."""

    def __init__(self, current: str | None, head: str) -> None:
        super().__init__(
            f"the database is at migration {current or '(none)'}, but this release needs {head}: "
            "run `visioncraft migrate`"
        )
        self.current = current
        self.head = head


@functools.cache
def _migration_script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def migration_head() -> str:
    """Return the newest migration of this release (reads the migration files once)."""
    head = _migration_script().get_current_head()
    assert head is not None, "the migrations folder has no revision"
    return head


def check_revision(current: str | None) -> bool:
    """Raise DatabaseNotMigratedError when `current` is behind this release's newest migration.

    Return True when the database is at the newest migration, and False when it is at a
    revision this release does not know: a newer release has migrated it already. An older
    replica then keeps serving during the rollout, which assumes that each migration keeps the
    previous release working.
    """
    head = migration_head()
    if current == head:
        return True
    known = {script.revision for script in _migration_script().walk_revisions()}
    if current is None or current in known:
        raise DatabaseNotMigratedError(current, head)
    return False


async def current_revision(engine: AsyncEngine) -> str | None:
    """Return the database's migration revision, or None before the first migration."""
    async with engine.connect() as connection:
        revision: str | None = await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    return revision


async def is_database_current(engine: AsyncEngine) -> bool:
    """Tell whether the database is at the newest migration."""
    return await current_revision(engine) == migration_head()


async def migrate(url: str) -> None:
    """Apply pending migrations from async code; Alembic's env runs its own loop in a thread."""
    await asyncio.to_thread(upgrade_database, url)
