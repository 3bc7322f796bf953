"""Stripe billing: webhook events, subscriptions, pack purchases, payments.

Accounts get the id of their Stripe customer, and ledger entries a `shortfall` column for
refunds that could not take back every credit because they were already spent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stripe_customer_id", sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_accounts_stripe_customer_id"), ["stripe_customer_id"]
        )
    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shortfall", sa.Integer(), nullable=True))

    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stripe_events_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "billing_subscriptions",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=True),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("plan", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("monthly_amount", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("allowance_plan", sa.String(length=32), nullable=True),
        sa.Column("allowance_period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_billing_subscriptions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_subscriptions")),
    )
    with op.batch_alter_table("billing_subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_subscriptions_account_id"), ["account_id"], unique=False
        )

    op.create_table(
        "billing_pack_purchases",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("pack", sa.String(length=32), nullable=False),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("refunded_amount", sa.Integer(), nullable=False),
        sa.Column("credits_taken_back", sa.Integer(), nullable=False),
        sa.Column("credits_short", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_billing_pack_purchases_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_pack_purchases")),
        sa.UniqueConstraint(
            "payment_intent_id", name=op.f("uq_billing_pack_purchases_payment_intent_id")
        ),
    )
    with op.batch_alter_table("billing_pack_purchases", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_pack_purchases_account_id"), ["account_id"], unique=False
        )

    op.create_table(
        "billing_payments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("item", sa.String(length=32), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_billing_payments_account_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_payments")),
        sa.UniqueConstraint("reference", name=op.f("uq_billing_payments_reference")),
    )
    with op.batch_alter_table("billing_payments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_payments_occurred_at"), ["occurred_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("billing_payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_payments_occurred_at"))
    op.drop_table("billing_payments")
    with op.batch_alter_table("billing_pack_purchases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_pack_purchases_account_id"))
    op.drop_table("billing_pack_purchases")
    with op.batch_alter_table("billing_subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_subscriptions_account_id"))
    op.drop_table("billing_subscriptions")
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_events_received_at"))
    op.drop_table("stripe_events")

    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.drop_column("shortfall")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_accounts_stripe_customer_id"), type_="unique")
        batch_op.drop_column("stripe_customer_id")
