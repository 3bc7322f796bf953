"""Database tables (SQLAlchemy 2 declarative). Alembic migrations in `migrations/` create them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so that migrations can refer to them on SQLite and PostgreSQL alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC, also on SQLite, which stores naive text."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Plan(Base):
    """A plan: its price, monthly allowance, credits per image and request limits.

    Prices are integers in the smallest unit of CURRENCY. A limit of 0 means unlimited, and
    0 credits per image means images of that size cost nothing.
    """

    __tablename__ = "plans"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(64))
    price: Mapped[int] = mapped_column(Integer, default=0)
    monthly_credits: Mapped[int] = mapped_column(Integer, default=0)
    credits_per_image_1k: Mapped[int] = mapped_column(Integer, default=1)
    credits_per_image_2k: Mapped[int] = mapped_column(Integer, default=2)
    credits_per_image_4k: Mapped[int] = mapped_column(Integer, default=4)
    requests_per_minute: Mapped[int] = mapped_column(Integer, default=0)
    concurrent_generations: Mapped[int] = mapped_column(Integer, default=0)
    images_per_request: Mapped[int] = mapped_column(Integer, default=0)
    # `cycle`: the allowance renews lazily every month; `invoice`: when billing says it was paid.
    renewal: Mapped[str] = mapped_column(String(16), default="cycle")
    # Internal plans (such as `unlimited`) are never offered to customers.
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    sort_order: Mapped[int] = mapped_column(Integer, default=0)


class CreditPack(Base):
    """A one-time purchase of credits that never expire."""

    __tablename__ = "credit_packs"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(64))
    credits: Mapped[int] = mapped_column(Integer)
    price: Mapped[int] = mapped_column(Integer)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    sort_order: Mapped[int] = mapped_column(Integer, default=0)


class Account(Base):
    """An owner of API keys and images, with its plan and its two credit balances.

    `allowance_credits` is what is left of this cycle's allowance (it expires at
    `cycle_ends_at`); `purchased_credits` never expire. Each equals the sum of its column in
    the account's ledger entries.
    """

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("allowance_credits >= 0", name="allowance_not_negative"),
        CheckConstraint("purchased_credits >= 0", name="purchased_not_negative"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    plan: Mapped[str] = mapped_column(ForeignKey("plans.name"), default="free")
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Set when the owner followed the emailed link; accounts made by an operator start verified.
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    allowance_credits: Mapped[int] = mapped_column(Integer, default=0)
    purchased_credits: Mapped[int] = mapped_column(Integer, default=0)
    cycle_started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    cycle_ends_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    # The Stripe customer that pays for this account, once billing has created one.
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)


class BrowserSession(Base):
    """A signed-in browser. Only the SHA-256 of the cookie's random token is stored."""

    __tablename__ = "browser_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    # Refreshed at most once a minute; a session unused for the idle timeout ends.
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    # The absolute end, however active the session is.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class CreditLedgerEntry(Base):
    """One change of an account's credits; rows are only ever added, never changed.

    `allowance_amount` and `purchased_amount` are signed changes of the two balances, and
    `amount` is their sum. `reference` makes a grant from an outside event (a Stripe invoice,
    a checkout session) happen once.
    """

    __tablename__ = "credit_ledger"
    __table_args__ = (
        CheckConstraint(
            "amount = allowance_amount + purchased_amount", name="amount_is_sum_of_parts"
        ),
        Index("ix_credit_ledger_account_id_id", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Integer)
    allowance_amount: Mapped[int] = mapped_column(Integer, default=0)
    purchased_amount: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    reservation_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    reference: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, index=True)
    # Credits that a `pack_refund` entry should have taken back but could not, because the
    # purchased balance was lower (they were spent); None on every other entry.
    shortfall: Mapped[int | None] = mapped_column(Integer, nullable=True)


class CreditReservation(Base):
    """Credits held for one generation: `held` until it is `used` or `refunded`."""

    __tablename__ = "credit_reservations"
    __table_args__ = (Index("ix_credit_reservations_status_created_at", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    generation_id: Mapped[str] = mapped_column(String(40))
    api_key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    credits: Mapped[int] = mapped_column(Integer)
    allowance_credits: Mapped[int] = mapped_column(Integer)
    purchased_credits: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="held")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    # The public key id that is part of the key itself; the secret is stored only as an HMAC.
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(8))
    secret_hmac: Mapped[str] = mapped_column(String(64))
    last_chars: Mapped[str] = mapped_column(String(8))
    scopes: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Generation(Base):
    __tablename__ = "generations"
    __table_args__ = (Index("ix_generations_created_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    api_key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    backend: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(80))
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    style: Mapped[str | None] = mapped_column(String(32), nullable=True)
    aspect_ratio: Mapped[str] = mapped_column(String(8))
    image_size: Mapped[str] = mapped_column(String(4))
    image_count: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    end_user: Mapped[str | None] = mapped_column(String(256), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    input_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    # The request's price in credits (charged only when it succeeded) and the plan it ran on.
    credits: Mapped[int] = mapped_column(Integer, default=0)
    plan: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (Index("ix_images_account_id_id", "account_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    generation_id: Mapped[str] = mapped_column(
        ForeignKey("generations.id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(40))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, index=True)


class IdempotencyRecord(Base):
    """The first request seen for an `Idempotency-Key`, so that a retry replays its result."""

    __tablename__ = "idempotency_records"
    __table_args__ = (
        UniqueConstraint("account_id", "key", name="uq_idempotency_records_account_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    request_sha256: Mapped[str] = mapped_column(String(64))
    generation_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    response_format: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, index=True)


class ContactMessage(Base):
    """A message sent through the contact form, kept for the admins to read."""

    __tablename__ = "contact_messages"
    __table_args__ = (
        Index("ix_contact_messages_client_address_created_at", "client_address", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(320))
    message: Mapped[str] = mapped_column(Text)
    locale: Mapped[str] = mapped_column(String(8))
    # The sender's address, for the per-address rate limit and for handling abuse.
    client_address: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, index=True)


class StripeEvent(Base):
    """A verified Stripe webhook event, stored before it is processed so that it counts once.

    `status` is `received`, then `processed` or `ignored` (a type we do not handle), or
    `failed` when processing raised. A failed event is processed again when Stripe retries it.
    """

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    # The event's own `created` time at Stripe, which orders events of one object.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="received")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, index=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class BillingSubscription(Base):
    """Our copy of a Stripe subscription, as last read from Stripe.

    `allowance_plan` and `allowance_period_end` record the newest paid invoice that renewed the
    account's allowance, so an older or repeated invoice never renews it again.
    """

    __tablename__ = "billing_subscriptions"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    account_id: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), nullable=True, index=True
    )
    customer_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    plan: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Stripe's status: incomplete, active, past_due, unpaid, canceled, incomplete_expired, ...
    status: Mapped[str] = mapped_column(String(32), default="incomplete")
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The subscription's price per month in the smallest unit of `currency`, for MRR.
    monthly_amount: Mapped[int] = mapped_column(Integer, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="jpy")
    allowance_plan: Mapped[str | None] = mapped_column(String(32), nullable=True)
    allowance_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class PackPurchase(Base):
    """A credit pack bought through one Stripe Checkout Session (`id` is the session id).

    `status` is `pending` (an asynchronous payment method has not paid yet), `paid`, `failed`
    or `refunded`. A refund takes credits back in proportion to `refunded_amount`; what the
    balance could not cover is counted in `credits_short`.
    """

    __tablename__ = "billing_pack_purchases"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    pack: Mapped[str] = mapped_column(String(32))
    credits: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    refunded_amount: Mapped[int] = mapped_column(Integer, default=0)
    credits_taken_back: Mapped[int] = mapped_column(Integer, default=0)
    credits_short: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class BillingPayment(Base):
    """One payment, failed payment or refund, for the revenue figures; once per `reference`."""

    __tablename__ = "billing_payments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The Stripe object it came from: an invoice, a checkout session, or a charge and refund.
    reference: Mapped[str] = mapped_column(String(255), unique=True)
    account_id: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"), nullable=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # `subscription` or `pack`
    item: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the plan or pack
    outcome: Mapped[str] = mapped_column(String(16))  # `paid`, `failed` or `refunded`
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, index=True)
