"""Password hashes and password rules of web accounts.

New hashes are Argon2id with argon2-cffi's default parameters (RFC 9106's low-memory option:
64 MiB, 3 passes, 4 lanes). Hashes made before Argon2, with scrypt as
`scrypt$n$r$p$salt$hash`, still verify, and `needs_rehash` tells the caller to replace them
with an Argon2id hash at the next successful log-in. Hashing is CPU-bound and slow on purpose,
so async code calls these functions in a worker thread.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from app.errors import InvalidRequestError

MIN_PASSWORD_CHARS = 10
# Argon2 accepts any length, but hashing a megabyte-long password wastes a worker for nothing.
MAX_PASSWORD_CHARS = 256
SCRYPT_PREFIX = "scrypt$"
# A short list of passwords that attackers try first, lower case, one per line; no network.
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")

_hasher = PasswordHasher()


def _load_common_passwords(path: Path = COMMON_PASSWORDS_FILE) -> frozenset[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip())


COMMON_PASSWORDS = _load_common_passwords()


def hash_password(password: str) -> str:
    """Hash a password with Argon2id into the PHC string format (`$argon2id$v=19$...`)."""
    return _hasher.hash(password)


@functools.cache
def dummy_hash() -> str:
    """Return a hash to verify against when an email is unknown, so that both cases cost the same."""
    return hash_password("visioncraft dummy password for unknown accounts")


def verify_password(password: str, stored: str) -> bool:
    """Tell whether `password` matches an Argon2 or a legacy scrypt hash."""
    if stored.startswith(SCRYPT_PREFIX):
        return _verify_scrypt(password, stored)
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Tell whether a hash should be replaced: scrypt, or Argon2 with weaker parameters."""
    if stored.startswith(SCRYPT_PREFIX):
        return True
    try:
        return _hasher.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def _verify_scrypt(password: str, stored: str) -> bool:
    parts = stored.split("$")
    if len(parts) != 6:
        return False
    _, n, r, p, salt, digest = parts
    candidate = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
    )
    return hmac.compare_digest(candidate, base64.b64decode(digest))


def check_password_strength(password: str, *, email: str | None = None) -> None:
    """Raise InvalidRequestError (field `password`) unless the password is long and uncommon."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidRequestError(
            f"The password has {len(password)} characters; use at least {MIN_PASSWORD_CHARS}.",
            field="password",
            code="password_too_short",
            min_chars=MIN_PASSWORD_CHARS,
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidRequestError(
            f"The password has {len(password)} characters; use at most {MAX_PASSWORD_CHARS}.",
            field="password",
            code="password_too_long",
            max_chars=MAX_PASSWORD_CHARS,
        )
    if _is_guessable(password, email):
        raise InvalidRequestError(
            "The password is one that attackers try first (a common password, one repeated "
            "character, or your email address). Choose a longer, less predictable one, such as "
            "several unrelated words.",
            field="password",
            code="password_too_common",
        )


def _is_guessable(password: str, email: str | None) -> bool:
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS or len(set(lowered)) <= 2:
        return True
    if email:
        local_part = email.lower().partition("@")[0]
        return lowered in {email.lower(), local_part} or (
            len(local_part) >= 4 and local_part in lowered and len(lowered) - len(local_part) < 4
        )
    return False
