"""The Stripe API as billing uses it: the stripe SDK's client, with spans, as plain dicts.

Every call goes through `StripeGateway`. It uses the SDK's async methods over httpx, so a call
never blocks the event loop, and gives each HTTP request a client span under the current span.
It keeps the outcome of the last call for the health check and turns the SDK's errors into
domain errors. Results are plain dicts (`StripeObject.to_dict()`), so the rest of billing
reads Stripe objects by their documented field names.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import stripe
from opentelemetry.trace import TracerProvider

from app.errors import BillingUnavailableError, InvalidRequestError
from telemetry.http_client import TracingTransport

logger = logging.getLogger(__name__)

STRIPE_TIMEOUT_S = 20.0
# The SDK retries connection failures, 409s and 5xx responses, reusing one idempotency key.
STRIPE_MAX_NETWORK_RETRIES = 2
# Stripe filters prices by at most this many lookup keys per list request.
LOOKUP_KEYS_PER_REQUEST = 10
MAX_LOGGED_MESSAGE_CHARS = 300


class TracedHttpxClient(stripe.HTTPXClient):
    """The SDK's httpx client, sending through `TracingTransport` for a client span per call."""

    def __init__(self, tracer_provider: TracerProvider, *, timeout_s: float) -> None:
        super().__init__(timeout=timeout_s)
        verify = ssl.create_default_context(cafile=stripe.ca_bundle_path)
        transport = TracingTransport(httpx.AsyncHTTPTransport(verify=verify), tracer_provider)
        # The SDK keeps its async client in `_client_async` (stripe 16.x). This replaces the
        # base class's client before it has opened any connection.
        self._unused_client = self._client_async
        self._client_async = httpx.AsyncClient(transport=transport)

    def _get_request_args_kwargs(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any
    ) -> list[Any]:
        # stripe 16.1 hands its form-encoded body to httpx as `data`, which httpx deprecates
        # for text; `content` sends the same bytes without the DeprecationWarning.
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        body = kwargs.pop("data", None)
        if body:
            kwargs["content"] = body
        return [args, kwargs]

    async def close_async(self) -> None:
        await self._unused_client.aclose()
        await super().close_async()  # type: ignore[no-untyped-call]


class StripeGateway:
    """The calls billing makes to Stripe. `last_call_at` (UTC) and `last_call_outcome`
    (`success` or the failure's error class) describe the last call, for the health check."""

    def __init__(
        self,
        secret_key: str,
        *,
        tracer_provider: TracerProvider,
        api_base: str | None = None,
        timeout_s: float = STRIPE_TIMEOUT_S,
        max_network_retries: int = STRIPE_MAX_NETWORK_RETRIES,
    ) -> None:
        self._http_client = TracedHttpxClient(tracer_provider, timeout_s=timeout_s)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base} if api_base else None,
            http_client=self._http_client,
            max_network_retries=max_network_retries,
        )
        self.last_call_at: datetime | None = None
        self.last_call_outcome: str | None = None

    async def aclose(self) -> None:
        await self._http_client.close_async()

    async def create_customer(
        self, *, email: str, account_id: str, idempotency_key: str
    ) -> dict[str, Any]:
        return await self._call(
            "customers.create",
            self._client.v1.customers.create_async(
                {"email": email, "metadata": {"account_id": account_id}},
                {"idempotency_key": idempotency_key},
            ),
        )

    async def prices_by_lookup_key(self, lookup_keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Return the active prices that carry one of `lookup_keys`, by lookup key."""
        found: dict[str, dict[str, Any]] = {}
        keys = list(lookup_keys)
        for start in range(0, len(keys), LOOKUP_KEYS_PER_REQUEST):
            chunk = keys[start : start + LOOKUP_KEYS_PER_REQUEST]
            page = await self._call(
                "prices.list",
                self._client.v1.prices.list_async(
                    {"lookup_keys": chunk, "active": True, "limit": 100}
                ),
            )
            for price in page["data"]:
                found[price["lookup_key"]] = price
        return found

    async def create_price(self, params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        return await self._call(
            "prices.create",
            self._client.v1.prices.create_async(params, {"idempotency_key": idempotency_key}),  # type: ignore[arg-type]
        )

    async def archive_price(self, price_id: str) -> dict[str, Any]:
        return await self._call(
            "prices.update", self._client.v1.prices.update_async(price_id, {"active": False})
        )

    async def retrieve_product(self, product_id: str) -> dict[str, Any] | None:
        """Return the product, or None when Stripe has no product with that id."""
        try:
            return await self._call(
                "products.retrieve", self._client.v1.products.retrieve_async(product_id)
            )
        except _MissingObjectError:
            return None

    async def create_product(
        self, params: dict[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        return await self._call(
            "products.create",
            self._client.v1.products.create_async(params, {"idempotency_key": idempotency_key}),  # type: ignore[arg-type]
        )

    async def update_product(self, product_id: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            "products.update",
            self._client.v1.products.update_async(product_id, params),  # type: ignore[arg-type]
        )

    async def create_checkout_session(
        self, params: dict[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        return await self._call(
            "checkout.sessions.create",
            self._client.v1.checkout.sessions.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            ),
        )

    async def checkout_sessions_of_payment(self, payment_intent_id: str) -> list[dict[str, Any]]:
        """Return the Checkout Sessions that created the payment intent (zero or one)."""
        page = await self._call(
            "checkout.sessions.list",
            self._client.v1.checkout.sessions.list_async(
                {"payment_intent": payment_intent_id, "limit": 1}
            ),
        )
        sessions: list[dict[str, Any]] = page["data"]
        return sessions

    async def create_portal_session(self, *, customer_id: str, return_url: str) -> dict[str, Any]:
        return await self._call(
            "billing_portal.sessions.create",
            self._client.v1.billing_portal.sessions.create_async(
                {"customer": customer_id, "return_url": return_url}
            ),
        )

    async def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        return await self._call(
            "subscriptions.retrieve",
            self._client.v1.subscriptions.retrieve_async(subscription_id),
        )

    async def _call(self, operation: str, call: Awaitable[stripe.StripeObject]) -> dict[str, Any]:
        try:
            result = await call
        except stripe.StripeError as error:
            # A 404 means that Stripe responded, so it counts as a healthy call.
            self._record("success" if error.http_status == 404 else type(error).__name__)
            raise self._translate(operation, error) from None
        self._record("success")
        return result.to_dict()

    def _record(self, outcome: str) -> None:
        self.last_call_at = datetime.now(UTC)
        self.last_call_outcome = outcome

    @staticmethod
    def _translate(operation: str, error: stripe.StripeError) -> Exception:
        """Log the failure once, without secrets, and return the domain error to raise."""
        status = error.http_status
        if isinstance(error, stripe.InvalidRequestError) and status == 404:
            return _MissingObjectError(operation)
        if isinstance(error, stripe.IdempotencyError):
            return InvalidRequestError(
                "This Idempotency-Key was used for another billing request. Send a new key.",
                code="idempotency_key_reused",
            )
        if isinstance(error, stripe.AuthenticationError | stripe.PermissionError):
            # Stripe's message quotes the end of the key, so it is left out of the log.
            logger.error(
                "Stripe rejected the secret key on %s (HTTP %s); check VISIONCRAFT_STRIPE_SECRET_KEY",
                operation,
                status,
            )
            return BillingUnavailableError(
                "Billing cannot reach Stripe because the server's Stripe key was rejected. "
                "Try again later; the operator must check VISIONCRAFT_STRIPE_SECRET_KEY."
            )
        message = str(error.user_message or "")[:MAX_LOGGED_MESSAGE_CHARS]
        logger.warning(
            "Stripe call %s failed: %s (HTTP %s, code %s, request %s): %s",
            operation,
            type(error).__name__,
            status,
            error.code,
            error.request_id,
            message if isinstance(error, stripe.InvalidRequestError) else "-",
        )
        return BillingUnavailableError(
            f"Stripe could not complete the request ({type(error).__name__}). Try again in a "
            "minute."
        )


class _MissingObjectError(BillingUnavailableError):
    """Stripe returned 404 for the object that `operation` requested."""

    def __init__(self, operation: str) -> None:
        super().__init__(
            f"Stripe has no object for {operation}. Try again later; if it persists, tell the "
            "operator."
        )
