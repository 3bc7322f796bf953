"""Signed links for email verification and password reset, with nothing stored.

A token is `<account id>.<expiry>.<HMAC>`, where the HMAC (keyed from SECRET_KEY, one key per
purpose) covers the account id, the expiry and a binding value. The binding makes a token
single-purpose and single-use: a verification token is bound to the email address, and a reset
token to the current password hash, so it stops working as soon as the password changes.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from enum import StrEnum

from app.errors import InvalidRequestError

VERIFY_EMAIL_TTL_S = 48 * 3600
RESET_PASSWORD_TTL_S = 3600


class TokenPurpose(StrEnum):
    VERIFY_EMAIL = "verify-email"
    RESET_PASSWORD = "reset-password"  # noqa: S105 - a purpose name, not a password


TTL_S = {
    TokenPurpose.VERIFY_EMAIL: VERIFY_EMAIL_TTL_S,
    TokenPurpose.RESET_PASSWORD: RESET_PASSWORD_TTL_S,
}


class EmailTokenSigner:
    """Issues and checks the tokens of emailed links; holds only keys derived from SECRET_KEY."""

    def __init__(self, secret_key: bytes) -> None:
        self._keys = {
            purpose: hmac.new(
                secret_key, f"visioncraft {purpose}".encode(), hashlib.sha256
            ).digest()
            for purpose in TokenPurpose
        }

    def _mac(self, purpose: TokenPurpose, account_id: str, expires_at: int, binding: str) -> str:
        message = f"{account_id}\x00{expires_at}\x00{binding}".encode()
        return hmac.new(self._keys[purpose], message, hashlib.sha256).hexdigest()

    def issue(
        self, purpose: TokenPurpose, account_id: str, binding: str, *, now: float | None = None
    ) -> str:
        expires_at = int(time.time() if now is None else now) + TTL_S[purpose]
        return f"{account_id}.{expires_at}.{self._mac(purpose, account_id, expires_at, binding)}"

    @staticmethod
    def account_id_of(token: str) -> str:
        """Return the account id that a token names, unchecked, so its binding can be read."""
        return token.split(".", 1)[0]

    def verify(
        self,
        purpose: TokenPurpose,
        token: str,
        binding: str,
        *,
        now: float | None = None,
    ) -> str:
        """Return the token's account id, or raise InvalidRequestError if it is invalid or expired."""
        account_id, _, rest = token.partition(".")
        expires_text, _, mac = rest.partition(".")
        valid = expires_text.isdigit() and hmac.compare_digest(
            mac, self._mac(purpose, account_id, int(expires_text), binding)
        )
        if not valid:
            raise InvalidRequestError(
                "The link is invalid or was already used. Ask for a new one.",
                field="token",
                code="invalid_email_link",
            )
        if int(expires_text) < (time.time() if now is None else now):
            raise InvalidRequestError(
                "The link has expired. Ask for a new one.",
                field="token",
                code="expired_email_link",
            )
        return account_id
