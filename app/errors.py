"""Domain errors: what services raise for a client to see.

Each error carries a stable `code`, a human `detail` and the fields a client needs to act on it
(`extra`). `app.api.problems` is the one place that turns them into HTTP responses.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """Base of every error a client may see; `code` is stable, `detail` is for humans."""

    code: ClassVar[str] = "service_error"
    title: ClassVar[str] = "Request failed"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.instance_code = code or self.code
        self.extra = extra


class InvalidRequestError(ServiceError):
    """The request is well-formed but one of its values is not acceptable."""

    code = "invalid_request"
    title = "Invalid request"

    def __init__(
        self, detail: str, *, field: str | None = None, code: str | None = None, **extra: Any
    ):
        super().__init__(detail, code=code, **extra)
        self.field = field


class AuthenticationError(ServiceError):
    """No credentials, or credentials that do not identify a live API key."""

    code = "invalid_api_key"
    title = "Authentication failed"


class PermissionDeniedError(ServiceError):
    """The caller is known but may not do this."""

    code = "permission_denied"
    title = "Permission denied"


class CsrfError(PermissionDeniedError):
    """A form post or cookie-authenticated call without a valid CSRF token from our own page."""

    code = "invalid_csrf_token"
    title = "Request could not be verified"


class NotFoundError(ServiceError):
    code = "not_found"
    title = "Not found"


class ConflictError(ServiceError):
    code = "conflict"
    title = "Conflict"


class ContentPolicyViolation(ServiceError):
    """The backend's safety filters blocked the prompt (stage `input`) or the image (`output`)."""

    code = "content_policy_violation"
    title = "Content policy violation"

    def __init__(self, *, stage: str, reason: str) -> None:
        where = "prompt" if stage == "input" else "generated image"
        super().__init__(
            f"The {where} was blocked by the safety filters ({reason}). "
            "Rephrase the prompt and try again.",
            stage=stage,
            reason=reason,
        )
        self.stage = stage
        self.reason = reason


class RateLimitedError(ServiceError):
    """Too many requests; try again after `retry_after_s` seconds."""

    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: float, code: str | None = None, **extra: Any):
        super().__init__(detail, code=code, **extra)
        self.retry_after_s = retry_after_s


class UpstreamUnavailableError(ServiceError):
    """The generation backend cannot serve anyone until an operator fixes its configuration."""

    code = "backend_unavailable"
    title = "Image backend unavailable"


class ImageStoreUnavailableError(ServiceError):
    """The image store cannot store or serve image bytes: it is down or misconfigured."""

    code = "image_store_unavailable"
    title = "Image storage unavailable"


class UpstreamTimeoutError(ServiceError):
    code = "backend_timeout"
    title = "Image backend timed out"


class UpstreamError(ServiceError):
    """The backend failed in a way the caller cannot fix; retrying later may work."""

    code = "backend_error"
    title = "Image backend failed"


class InsufficientCreditsError(ServiceError):
    """The account's balance does not cover the price of the request."""

    code = "insufficient_credits"
    title = "Insufficient credits"

    def __init__(self, *, balance: int, price: int, purchase_url: str) -> None:
        super().__init__(
            f"This request costs {price} credits but the balance is {balance}. "
            f"Buy credits or upgrade the plan at {purchase_url}, or ask for fewer or smaller "
            "images.",
            balance=balance,
            price=price,
            purchase_url=purchase_url,
        )


class CapacityExceededError(ServiceError):
    """The service reached its daily cap on upstream spend; paid backends pause until it resets."""

    code = "capacity_exceeded"
    title = "Capacity exceeded"

    def __init__(self, detail: str, *, retry_after_s: float, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after_s = retry_after_s


class MailError(ServiceError):
    """A mail could not be handed to the mail server or written to the outbox."""

    code = "mail_failed"
    title = "Mail could not be sent"


class BillingUnavailableError(ServiceError):
    """Billing cannot serve the request now: it is off, Stripe failed, or the catalog is not synced."""

    code = "billing_unavailable"
    title = "Billing unavailable"


class BillingNotConfiguredError(BillingUnavailableError):
    """Billing is off because a Stripe setting is unset; the detail names each one."""

    code = "billing_not_configured"
    title = "Billing not configured"

    def __init__(self, missing: list[str]) -> None:
        super().__init__(
            f"Billing is not configured on this server: set {' and '.join(missing)} "
            "(see the Billing section of the README). Everything else keeps working.",
            missing_settings=missing,
        )


class WebhookRejectedError(ServiceError):
    """A webhook request whose signature or body could not be verified (400)."""

    code = "invalid_signature"
    title = "Webhook rejected"

    def __init__(self, detail: str, *, code: str) -> None:
        super().__init__(detail, code=code)
