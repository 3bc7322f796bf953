"""A fake of the Stripe API, for tests of the real stripe SDK, and helpers to build events.

`FakeStripeAPI` serves on 127.0.0.1, from a background thread, the requests that billing sends
with stripe 16.x (form-encoded bodies and queries with `a[b]` and `a[0]` keys, JSON responses):

- `POST /v1/customers`;
- `GET /v1/products/{id}`, `POST /v1/products`, `POST /v1/products/{id}`;
- `GET /v1/prices?lookup_keys[0]=...&active=true`, `POST /v1/prices` (with
  `transfer_lookup_key`), `POST /v1/prices/{id}` (archive);
- `POST /v1/checkout/sessions`, `GET /v1/checkout/sessions?payment_intent=...`,
  `GET /v1/checkout/sessions/{id}`;
- `POST /v1/billing_portal/sessions`;
- `GET /v1/subscriptions/{id}`, `GET /v1/invoices/{id}`, `GET /v1/charges/{id}`: re-reads of
  objects that a test put in place with `put`.

It checks the secret key, replays a request sent again with the same `Idempotency-Key` and
answers 400 `idempotency_error` when the key comes with other parameters, as Stripe does.
Every request is recorded with its idempotency key. Errors use Stripe's body
`{"error": {"type", "code", "message", "param"}}`.

The module also builds the objects and signed events that Stripe would send for them.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe

TEST_SECRET_KEY = "sk_test_fake_" + "k" * 24
TEST_WEBHOOK_SECRET = "whsec_test_" + "w" * 24
OBJECT_ID = re.compile(r"^[A-Za-z0-9_]+$")
KEY_PART = re.compile(r"\[([^\]]*)\]")
IDLE_CONNECTION_TIMEOUT_S = 10.0
OBJECT_NAMES = {
    "customers": "customer",
    "products": "product",
    "prices": "price",
    "checkout/sessions": "checkout.session",
    "billing_portal/sessions": "billing_portal.session",
    "subscriptions": "subscription",
    "invoices": "invoice",
    "charges": "charge",
}
ID_PREFIXES = {
    "customers": "cus",
    "prices": "price",
    "checkout/sessions": "cs_test",
    "billing_portal/sessions": "bps",
}


@dataclass
class RecordedRequest:
    """One request as the fake received it, with its decoded form or query parameters."""

    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None
    headers: dict[str, str]  # lower-case names; the secret key is replaced
    status: int = 0


@dataclass(frozen=True)
class Failure:
    """An error for the next request whose path starts with `path_prefix`."""

    path_prefix: str
    status: int
    body: dict[str, Any]
    should_retry: bool = False


def decode_params(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Turn Stripe's `a[b][0]=v` pairs into nested dicts; indexes become lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head = key.split("[", 1)[0]
        parts = [head, *KEY_PART.findall(key[len(head) :])]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _scalar(value)
    return _lists(root)


def _scalar(value: str) -> Any:
    if value in {"true", "false"}:
        return value == "true"
    return int(value) if re.fullmatch(r"-?\d+", value) else value


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _lists(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each reply waits ~40 ms for the client's delayed ACK
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(IDLE_CONNECTION_TIMEOUT_S)

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _dispatch(self) -> None:
        try:
            self.server.fake._handle(self)
        except Exception:
            self.server.fake.handler_errors.append(sys.exc_info()[1])  # type: ignore[arg-type]
            raise

    do_GET = do_POST = do_DELETE = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeStripeAPI) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)


class FakeStripeAPI:
    """An in-memory Stripe account. Objects are kept by collection (`prices`, ...) and id."""

    def __init__(self, secret_key: str = TEST_SECRET_KEY) -> None:
        self.secret_key = secret_key
        self.objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in OBJECT_NAMES}
        self.requests: list[RecordedRequest] = []
        self.handler_errors: list[BaseException] = []
        self._failures: deque[Failure] = deque()
        self._replies: dict[str, tuple[tuple[str, str, str], int, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("The fake Stripe API is not running; call start() first.")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-stripe-api",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FakeStripeAPI:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # What tests use.

    def put(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object in the state that Stripe has now, for later re-reads."""
        with self._lock:
            self.objects[kind][obj["id"]] = copy.deepcopy(obj)
        return obj

    def get(self, kind: str, object_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self.objects[kind][object_id])

    def fail_next(self, path_prefix: str, status: int = 500, *, should_retry: bool = False) -> None:
        """Fail the next request under `path_prefix` with a Stripe API error."""
        body = {"error": {"type": "api_error", "message": "An unknown error occurred."}}
        with self._lock:
            self._failures.append(Failure(path_prefix, status, body, should_retry))

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def active_prices(self) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(p) for p in self.objects["prices"].values() if p["active"]]

    # Serving.

    def _handle(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode() if length else ""
        source = body if handler.command == "POST" else parts.query
        headers = {name.lower(): value for name, value in handler.headers.items()}
        authorized = headers.get("authorization") == f"Bearer {self.secret_key}"
        headers["authorization"] = "<redacted>"
        record = RecordedRequest(
            method=handler.command,
            path=parts.path,
            params=decode_params(parse_qsl(source, keep_blank_values=True)),
            idempotency_key=headers.get("idempotency-key"),
            headers=headers,
        )
        with self._lock:
            self.requests.append(record)
            status, payload, extra = self._reply(record, authorized)
            record.status = status
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Request-Id", "req_" + secrets.token_hex(7))
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()

    def _reply(
        self, record: RecordedRequest, authorized: bool
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Return the status, body and extra headers of one request. The caller holds the lock."""
        if not authorized:
            return _error(401, "invalid_request_error", "Invalid API Key provided.", None)
        for failure in list(self._failures):
            if record.path.startswith(failure.path_prefix):
                self._failures.remove(failure)
                retry = "true" if failure.should_retry else "false"
                return failure.status, failure.body, {"Stripe-Should-Retry": retry}
        key = record.idempotency_key
        fingerprint = (record.method, record.path, json.dumps(record.params, sort_keys=True))
        if key is not None and key in self._replies:
            first, status, payload = self._replies[key]
            if first != fingerprint:
                return _error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with.",
                    None,
                )
            return status, payload, {"Idempotent-Replayed": "true"}
        status, payload = self._route(record)
        if key is not None and record.method == "POST":
            self._replies[key] = (fingerprint, status, payload)
        return status, payload, {}

    def _route(self, record: RecordedRequest) -> tuple[int, dict[str, Any]]:
        found_path = _collection_of(record.path)
        if found_path is None:
            return _error(404, "invalid_request_error", f"Unrecognized URL {record.path}", None)[:2]
        kind, object_id = found_path
        params = record.params
        if record.method == "GET" and object_id is None:
            return 200, self._list(kind, params)
        if record.method == "GET":
            found = self.objects[kind].get(object_id)
            if found is None:
                return _missing(OBJECT_NAMES[kind], object_id)
            return 200, copy.deepcopy(found)
        if object_id is not None:
            return self._update(kind, object_id, params)
        return self._create(kind, params)

    def _list(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        rows = list(self.objects[kind].values())
        if "lookup_keys" in params:
            rows = [row for row in rows if row.get("lookup_key") in params["lookup_keys"]]
        if "active" in params:
            rows = [row for row in rows if row.get("active") is params["active"]]
        if "payment_intent" in params:
            rows = [row for row in rows if row.get("payment_intent") == params["payment_intent"]]
        limit = int(params.get("limit", 10))
        return {
            "object": "list",
            "url": f"/v1/{kind}",
            "has_more": len(rows) > limit,
            "data": copy.deepcopy(rows[:limit]),
        }

    def _create(self, kind: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        object_id = params.get("id") or f"{ID_PREFIXES.get(kind, 'obj')}_{secrets.token_hex(8)}"
        if object_id in self.objects[kind]:
            return _error(
                400, "invalid_request_error", "Object exists.", "id", "resource_already_exists"
            )[:2]
        obj: dict[str, Any] = {
            "id": object_id,
            "object": OBJECT_NAMES[kind],
            "created": int(time.time()),
            "livemode": False,
            # Stripe keeps metadata values as strings.
            "metadata": {key: str(value) for key, value in params.get("metadata", {}).items()},
        }
        if kind == "customers":
            obj["email"] = params.get("email")
        elif kind == "products":
            obj.update(name=params["name"], active=params.get("active", True))
        elif kind == "prices":
            problem = self._create_price(obj, params)
            if problem is not None:
                return problem
        elif kind == "checkout/sessions":
            problem = self._create_checkout_session(obj, params)
            if problem is not None:
                return problem
        elif kind == "billing_portal/sessions":
            if params.get("customer") not in self.objects["customers"]:
                return _missing("customer", str(params.get("customer")))
            obj.update(
                customer=params["customer"],
                return_url=params.get("return_url"),
                url=f"https://billing.stripe.com/p/session/test_{secrets.token_hex(8)}",
            )
        self.objects[kind][object_id] = obj
        return 200, copy.deepcopy(obj)

    def _create_price(
        self, obj: dict[str, Any], params: dict[str, Any]
    ) -> tuple[int, dict[str, Any]] | None:
        if params.get("product") not in self.objects["products"]:
            return _missing("product", str(params.get("product")))
        lookup_key = params.get("lookup_key")
        holders = [p for p in self.objects["prices"].values() if p.get("lookup_key") == lookup_key]
        if lookup_key and holders and not params.get("transfer_lookup_key"):
            return _error(
                400,
                "invalid_request_error",
                f"A price with lookup key {lookup_key} exists already.",
                "lookup_key",
            )[:2]
        for holder in holders:
            holder["lookup_key"] = None
        recurring = params.get("recurring")
        obj.update(
            active=True,
            currency=params["currency"],
            unit_amount=params["unit_amount"],
            product=params["product"],
            lookup_key=lookup_key,
            tax_behavior=params.get("tax_behavior", "unspecified"),
            recurring=(
                {"interval": recurring["interval"], "interval_count": 1} if recurring else None
            ),
            type="recurring" if recurring else "one_time",
        )
        return None

    def _create_checkout_session(
        self, obj: dict[str, Any], params: dict[str, Any]
    ) -> tuple[int, dict[str, Any]] | None:
        line_items = params.get("line_items") or []
        prices = [self.objects["prices"].get(item.get("price")) for item in line_items]
        if not prices or any(price is None or not price["active"] for price in prices):
            return _error(400, "invalid_request_error", "No such price.", "line_items")[:2]
        recurring = [price for price in prices if price and price["recurring"]]
        mode = params.get("mode")
        if (mode == "subscription") != bool(recurring):
            return _error(
                400,
                "invalid_request_error",
                "You must provide at least one recurring price in `subscription` mode and only "
                "one-time prices in `payment` mode.",
                "line_items",
            )[:2]
        customer = params.get("customer")
        if customer is not None and customer not in self.objects["customers"]:
            return _missing("customer", customer)
        obj.update(
            mode=mode,
            status="open",
            payment_status="unpaid",
            customer=customer,
            client_reference_id=params.get("client_reference_id"),
            success_url=params.get("success_url"),
            cancel_url=params.get("cancel_url"),
            amount_total=sum(price["unit_amount"] for price in prices if price),
            currency=prices[0]["currency"] if prices[0] else None,
            subscription=None,
            payment_intent=None,
            invoice=None,
            url=f"https://checkout.stripe.com/c/pay/{obj['id']}",
            line_items=line_items,
            subscription_data=params.get("subscription_data"),
            payment_intent_data=params.get("payment_intent_data"),
            invoice_creation=params.get("invoice_creation"),
        )
        return None

    def _update(
        self, kind: str, object_id: str, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        found = self.objects[kind].get(object_id)
        if found is None:
            return _missing(OBJECT_NAMES[kind], object_id)
        found.update({key: value for key, value in params.items() if key != "metadata"})
        return 200, copy.deepcopy(found)


def _collection_of(path: str) -> tuple[str, str | None] | None:
    """Split `/v1/checkout/sessions/cs_1` into the collection and the object id."""
    for kind in sorted(OBJECT_NAMES, key=len, reverse=True):
        if path == f"/v1/{kind}":
            return kind, None
        rest = path.removeprefix(f"/v1/{kind}/")
        if rest != path and OBJECT_ID.match(rest):
            return kind, rest
    return None


def _error(
    status: int, error_type: str, message: str, param: str | None, code: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    error = {"type": error_type, "message": message, "param": param, "code": code}
    return status, {"error": error}, {}


def _missing(object_name: str, object_id: str) -> tuple[int, dict[str, Any]]:
    status, body, _ = _error(
        404,
        "invalid_request_error",
        f"No such {object_name}: '{object_id}'",
        "id",
        "resource_missing",
    )
    return status, body


# Objects and events as Stripe sends them (API version 2026-10-28), built from a test's state.


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def subscription_object(
    session: dict[str, Any],
    price: dict[str, Any],
    *,
    status: str = "active",
    period_start: int,
    period_end: int,
    cancel_at_period_end: bool = False,
    subscription_id: str | None = None,
) -> dict[str, Any]:
    """A subscription that a subscription-mode Checkout Session created."""
    metadata = (session.get("subscription_data") or {}).get("metadata", {})
    return {
        "id": subscription_id or new_id("sub"),
        "object": "subscription",
        "customer": session["customer"],
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "cancel_at": period_end if cancel_at_period_end else None,
        "metadata": metadata,
        "created": period_start,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": new_id("si"),
                    "object": "subscription_item",
                    "price": price,
                    "quantity": 1,
                    "current_period_start": period_start,
                    "current_period_end": period_end,
                }
            ],
        },
    }


def invoice_object(
    subscription: dict[str, Any],
    *,
    amount: int,
    period_start: int,
    period_end: int,
    billing_reason: str = "subscription_create",
    status: str = "paid",
    attempt_count: int = 1,
) -> dict[str, Any]:
    """An invoice of a subscription, its subscription under `parent.subscription_details`."""
    invoice_id = new_id("in")
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": subscription["customer"],
        "status": status,
        "billing_reason": billing_reason,
        "currency": subscription["items"]["data"][0]["price"]["currency"],
        "amount_due": amount,
        "amount_paid": amount if status == "paid" else 0,
        "attempt_count": attempt_count,
        "parent": {
            "type": "subscription_details",
            "subscription_details": {
                "subscription": subscription["id"],
                "metadata": subscription["metadata"],
            },
        },
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": new_id("il"),
                    "object": "line_item",
                    "amount": amount,
                    "period": {"start": period_start, "end": period_end},
                }
            ],
        },
    }


def charge_object(session: dict[str, Any], *, amount_refunded: int) -> dict[str, Any]:
    """A charge of a payment-mode Checkout Session, refunded by `amount_refunded` so far."""
    return {
        "id": new_id("ch"),
        "object": "charge",
        "amount": session["amount_total"],
        "amount_refunded": amount_refunded,
        "refunded": amount_refunded >= session["amount_total"],
        "currency": session["currency"],
        "customer": session["customer"],
        "payment_intent": session["payment_intent"],
        "status": "succeeded",
    }


def event(event_type: str, obj: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
    """An event as Stripe delivers it: a snapshot of the object at the time of the event."""
    return {
        "id": new_id("evt"),
        "object": "event",
        "api_version": stripe.api_version,
        "created": created if created is not None else int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": copy.deepcopy(obj)},
    }


@dataclass
class SignedDelivery:
    """A webhook request body and its Stripe-Signature header."""

    body: bytes
    signature: str
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.headers = {
            "Stripe-Signature": self.signature,
            "Content-Type": "application/json; charset=utf-8",
        }


def sign(
    payload: dict[str, Any], *, secret: str = TEST_WEBHOOK_SECRET, timestamp: int | None = None
) -> SignedDelivery:
    """Serialise an event as Stripe does and sign it with the SDK's own helper."""
    body = json.dumps(payload, indent=2)
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp)
    return SignedDelivery(body.encode(), header)
