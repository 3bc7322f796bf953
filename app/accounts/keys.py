"""API keys: format, checksum, hashing, creation, listing, revocation and authentication.

A key reads `vc_live_<key id>_<secret><checksum>`:

- `vc_live_` or `vc_test_`: test keys always use the demo backend and spend nothing;
- the key id: 16 base62 characters, public, the primary key of the `api_keys` row;
- the secret: 32 base62 characters (about 190 bits), stored only as HMAC-SHA256 with SECRET_KEY;
- the checksum: CRC32 of everything before it, 6 base62 characters, so that a typo or a
  look-alike string is rejected without a database lookup (and secret scanners can verify keys).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from app.storage.tables import Account, ApiKey, utc_now

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_ID_CHARS = 16
SECRET_CHARS = 32
CHECKSUM_CHARS = 6
KEY_PATTERN = re.compile(
    rf"^vc_(?P<mode>live|test)_(?P<key_id>[0-9A-Za-z]{{{KEY_ID_CHARS}}})"
    rf"_(?P<secret>[0-9A-Za-z]{{{SECRET_CHARS}}})(?P<checksum>[0-9A-Za-z]{{{CHECKSUM_CHARS}}})$"
)
KEY_ID_PATTERN = re.compile(rf"^[0-9A-Za-z]{{{KEY_ID_CHARS}}}$")
LAST_USED_RESOLUTION = timedelta(minutes=1)


class KeyMode(StrEnum):
    LIVE = "live"
    TEST = "test"


class Scope(StrEnum):
    IMAGES_GENERATE = "images:generate"
    IMAGES_READ = "images:read"
    KEYS_MANAGE = "keys:manage"
    ADMIN = "admin"


DEFAULT_SCOPES = (Scope.IMAGES_GENERATE, Scope.IMAGES_READ, Scope.KEYS_MANAGE)


@dataclass(frozen=True)
class Principal:
    """The caller behind an authenticated API key."""

    key_id: str | None  # None for the demo page, which has no key
    account_id: str
    mode: KeyMode
    scopes: frozenset[str]
    role: str
    plan: str

    @property
    def is_test(self) -> bool:
        return self.mode is KeyMode.TEST

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes:
            raise PermissionDeniedError(
                f"This API key lacks the {scope.value!r} scope. Create a key with that scope "
                f"(`visioncraft keys create --scopes {scope.value}`) and retry.",
                code="missing_scope",
                missing_scope=scope.value,
            )


@dataclass(frozen=True)
class CreatedKey:
    """A new key: `token` is the full key, shown once and never stored."""

    row: ApiKey
    token: str


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        chars.append(BASE62[remainder])
    return "".join(reversed(chars))


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_CHARS)


def format_key(mode: KeyMode, key_id: str, secret: str) -> str:
    body = f"vc_{mode.value}_{key_id}_{secret}"
    return body + checksum(body)


def hash_secret(secret: str, secret_key: bytes) -> str:
    return hmac.new(secret_key, secret.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ParsedKey:
    mode: KeyMode
    key_id: str
    secret: str


def parse_key(token: str) -> ParsedKey:
    """Split a key into its parts, or raise AuthenticationError if its shape or checksum is wrong."""
    match = KEY_PATTERN.match(token)
    if match is None:
        raise AuthenticationError(
            "The API key is malformed: expected `vc_live_...` or `vc_test_...` as printed by "
            "`visioncraft keys create`. Check that it was copied whole.",
            code="malformed_api_key",
        )
    body = token[:-CHECKSUM_CHARS]
    if not hmac.compare_digest(checksum(body), match["checksum"]):
        raise AuthenticationError(
            "The API key's checksum does not match: it was mistyped or truncated. "
            "Copy the key again.",
            code="malformed_api_key",
        )
    return ParsedKey(mode=KeyMode(match["mode"]), key_id=match["key_id"], secret=match["secret"])


def parse_scopes(requested: Iterable[str] | None, *, account_role: str) -> tuple[str, ...]:
    """Validate requested scopes; `admin` only for an admin account and only when asked."""
    if requested is None:
        return tuple(scope.value for scope in DEFAULT_SCOPES)
    scopes = []
    known = {scope.value for scope in Scope}
    for scope in requested:
        name = scope.strip()
        if not name:
            continue
        if name not in known:
            raise InvalidRequestError(
                f"Unknown scope {name!r}. Use any of: {', '.join(sorted(known))}.",
                field="scopes",
                code="invalid_scope",
            )
        if name == Scope.ADMIN and account_role != "admin":
            raise PermissionDeniedError(
                "Only an admin account's keys may carry the 'admin' scope.",
                code="admin_scope_not_allowed",
            )
        scopes.append(name)
    if not scopes:
        raise InvalidRequestError("Give at least one scope.", field="scopes", code="invalid_scope")
    return tuple(dict.fromkeys(scopes))


class KeyService:
    """Creates, lists, revokes and authenticates API keys."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], secret_key: bytes) -> None:
        self._sessions = sessions
        self._secret_key = secret_key

    async def create(
        self,
        account_id: str,
        *,
        name: str,
        mode: KeyMode = KeyMode.LIVE,
        scopes: Sequence[str] | None = None,
    ) -> CreatedKey:
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidRequestError(
                "A key name must have 1 to 100 characters.", field="name", code="invalid_key_name"
            )
        async with self._sessions.begin() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise NotFoundError(f"No account with id {account_id!r}.", code="account_not_found")
            if account.role == "system":
                raise PermissionDeniedError(
                    f"The account {account.email} is used by the service itself and has no keys.",
                    code="system_account",
                )
            granted = parse_scopes(scopes, account_role=account.role)
            key_id, secret = _random_base62(KEY_ID_CHARS), _random_base62(SECRET_CHARS)
            token = format_key(mode, key_id, secret)
            row = ApiKey(
                id=key_id,
                account_id=account_id,
                name=name,
                mode=mode.value,
                secret_hmac=hash_secret(secret, self._secret_key),
                last_chars=token[-4:],
                scopes=" ".join(granted),
                created_at=utc_now(),
            )
            session.add(row)
        return CreatedKey(row=row, token=token)

    async def list(
        self, account_id: str | None = None, *, include_revoked: bool = True
    ) -> list[ApiKey]:
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if account_id is not None:
            query = query.where(ApiKey.account_id == account_id)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        async with self._sessions() as session:
            return list((await session.scalars(query)).all())

    async def revoke(self, key_id: str, *, account_id: str | None = None) -> ApiKey:
        """Revoke a key; with `account_id`, only a key of that account (others are not found)."""
        if not KEY_ID_PATTERN.match(key_id):
            # Not echoed: a caller who pastes the whole key here would see its secret again.
            raise NotFoundError(
                "No API key has that id: a key id is the 16 letters and digits after "
                "`vc_live_` or `vc_test_`, as `visioncraft keys list` and GET /api/v1/keys show.",
                code="api_key_not_found",
            )
        async with self._sessions.begin() as session:
            row = await session.get(ApiKey, key_id)
            if row is None or (account_id is not None and row.account_id != account_id):
                raise NotFoundError(
                    f"No API key with id {key_id!r}; `visioncraft keys list` and "
                    "GET /api/v1/keys show the ids.",
                    code="api_key_not_found",
                )
            if row.revoked_at is None:
                row.revoked_at = utc_now()
            return row

    async def authenticate(self, token: str) -> Principal:
        parsed = parse_key(token)
        async with self._sessions() as session:
            result = await session.execute(
                select(ApiKey, Account.role, Account.plan)
                .join(Account, Account.id == ApiKey.account_id)
                .where(ApiKey.id == parsed.key_id)
            )
            found = result.first()
        expected = found[0].secret_hmac if found else hash_secret("", self._secret_key)
        matches = hmac.compare_digest(expected, hash_secret(parsed.secret, self._secret_key))
        if found is None or not matches or found[0].mode != parsed.mode.value:
            raise AuthenticationError(
                "The API key is not valid. Check it, or create a new one with "
                "`visioncraft keys create`.",
                code="invalid_api_key",
            )
        row, role, plan = found
        if row.revoked_at is not None:
            raise AuthenticationError(
                f"The API key {row.id} was revoked on {row.revoked_at:%Y-%m-%d}. Use another key.",
                code="revoked_api_key",
            )
        await self._touch(row)
        return Principal(
            key_id=row.id,
            account_id=row.account_id,
            mode=KeyMode(row.mode),
            scopes=frozenset(row.scopes.split()),
            role=role,
            plan=plan,
        )

    async def _touch(self, row: ApiKey) -> None:
        """Record use at most once a minute per key, so that reads do not become writes."""
        now = utc_now()
        if row.last_used_at is not None and now - row.last_used_at < LAST_USED_RESOLUTION:
            return
        async with self._sessions.begin() as session:
            await session.execute(
                update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now)
            )


def describe_key(row: ApiKey) -> dict[str, object]:
    """Describe a key as listings show it: the id and last characters, never the secret."""
    created: datetime = row.created_at
    return {
        "id": row.id,
        "name": row.name,
        "mode": row.mode,
        "redacted": f"vc_{row.mode}_{row.id}_...{row.last_chars}",
        "scopes": row.scopes.split(),
        "created_at": created,
        "last_used_at": row.last_used_at,
        "revoked_at": row.revoked_at,
    }
