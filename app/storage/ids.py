"""Time-sortable public ids such as `img_01JF3M8X4Q7R2ZC5VYBTNWKD0E`.

An id is a type prefix, then 10 Crockford base32 characters of milliseconds since the epoch and
16 random ones (the ULID layout). Ids of one type sort by creation time, so a listing ordered by
id is newest-first without a second sort key, and the last id of a page is its cursor.
"""

from __future__ import annotations

import secrets
import time

CROCKFORD_BASE32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TIME_CHARS = 10
RANDOM_CHARS = 16


def _encode(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, remainder = divmod(number, 32)
        chars.append(CROCKFORD_BASE32[remainder])
    return "".join(reversed(chars))


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    """Return a new id for `prefix` (`img`, `gen`, ...), ordered by `now_ms`."""
    timestamp_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    randomness = secrets.randbits(RANDOM_CHARS * 5)
    return f"{prefix}_{_encode(timestamp_ms, TIME_CHARS)}{_encode(randomness, RANDOM_CHARS)}"


def is_valid_id(value: str, prefix: str) -> bool:
    """Tell whether `value` has the shape of an id of type `prefix`."""
    head, _, body = value.partition("_")
    return (
        head == prefix
        and len(body) == TIME_CHARS + RANDOM_CHARS
        and all(char in CROCKFORD_BASE32 for char in body)
    )
