"""Signed, expiring image URLs that work in an `<img>` tag without an API key."""

from __future__ import annotations

import base64
import hashlib
import hmac


class UrlSigner:
    """Signs `(image id, expiry)` pairs with HMAC-SHA256 under SECRET_KEY."""

    def __init__(self, secret_key: bytes) -> None:
        # A derived key, so that a signature can never double as an API key hash.
        self._key = hmac.new(secret_key, b"visioncraft image url v1", hashlib.sha256).digest()

    def sign(self, image_id: str, expires_at: int) -> str:
        mac = hmac.new(self._key, f"{image_id}:{expires_at}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def verify(self, image_id: str, expires_at: int, signature: str, *, now: float) -> bool:
        """Tell whether `signature` is valid for the image and `expires_at` is still ahead."""
        if expires_at < now:
            return False
        return hmac.compare_digest(self.sign(image_id, expires_at), signature)
