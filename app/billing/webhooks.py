"""Verification of Stripe webhook requests: the `Stripe-Signature` header over the raw body.

The stripe SDK verifies the signature (HMAC-SHA256 of `"{t}.{body}"` with the endpoint's
signing secret) and its age (300 s by default). A body parsed and serialised again no longer
matches, so the route passes the bytes exactly as they arrived. Neither the header nor the
body is ever logged or echoed in an error.
"""

from __future__ import annotations

from typing import Any

import stripe

from app.errors import WebhookRejectedError

SIGNATURE_TOLERANCE_S = stripe.Webhook.DEFAULT_TOLERANCE


def verify_event(payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
    """Return the event that the signed `payload` carries, or raise WebhookRejectedError (400).

    The error's code names the reason: missing_signature, malformed_signature, invalid_signature,
    stale_signature or invalid_payload.
    """
    if not signature:
        raise WebhookRejectedError(
            "The request has no Stripe-Signature header. Webhooks must come from Stripe.",
            code="missing_signature",
        )
    try:
        event = stripe.Webhook.construct_event(payload, signature, secret, SIGNATURE_TOLERANCE_S)
    except stripe.SignatureVerificationError:
        raise _rejection(payload, signature, secret) from None
    except (UnicodeDecodeError, ValueError):
        raise _invalid_payload() from None
    values: dict[str, Any] = event.to_dict()
    if not _is_event(values):
        raise _invalid_payload()
    return values


def _rejection(payload: bytes, signature: str, secret: str) -> WebhookRejectedError:
    """Tell apart a header we cannot read, a wrong signature and an old but valid one."""
    if not _is_well_formed(signature):
        return WebhookRejectedError(
            "The Stripe-Signature header is not in Stripe's `t=...,v1=...` form.",
            code="malformed_signature",
        )
    try:
        # Without a tolerance the SDK checks only the signature, so success means too old.
        stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance=None)
    except (stripe.SignatureVerificationError, UnicodeDecodeError):
        return WebhookRejectedError(
            "The Stripe-Signature header does not match the body. Check that "
            "VISIONCRAFT_STRIPE_WEBHOOK_SECRET is this endpoint's signing secret and that "
            "nothing between Stripe and the service changes the body.",
            code="invalid_signature",
        )
    return WebhookRejectedError(
        f"The Stripe-Signature timestamp is more than {SIGNATURE_TOLERANCE_S} s old. Check the "
        "server's clock; Stripe signs every retry anew.",
        code="stale_signature",
    )


def _is_well_formed(signature: str) -> bool:
    pairs = [part.partition("=") for part in signature.split(",")]
    timestamps = [value for name, _, value in pairs if name.strip() == "t"]
    has_v1 = any(name.strip() == "v1" and value for name, _, value in pairs)
    return has_v1 and len(timestamps) == 1 and timestamps[0].strip().isdigit()


def _is_event(values: dict[str, Any]) -> bool:
    data = values.get("data")
    return (
        isinstance(values.get("id"), str)
        and isinstance(values.get("type"), str)
        and isinstance(values.get("created"), int)
        and isinstance(data, dict)
        and isinstance(data.get("object"), dict)
    )


def _invalid_payload() -> WebhookRejectedError:
    return WebhookRejectedError(
        "The signed body is not a Stripe event object (JSON with id, type, created and data).",
        code="invalid_payload",
    )
