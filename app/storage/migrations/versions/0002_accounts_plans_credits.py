"""Accounts, plans and credits: plans, credit packs, the credit ledger and reservations.

Existing accounts join a plan (admins the internal `unlimited` plan, everyone else `free`)
with empty balances and a cycle that has already ended, so the free allowance is granted on
first use. Their API keys keep working unchanged.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 20:45:00
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PLANS = [
    # name, display name, price, monthly credits, credits per 1K/2K/4K image,
    # requests per minute, concurrent generations, images per request, renewal, public, order
    ("free", "Free", 0, 50, 1, 2, 4, 10, 1, 2, "cycle", True, 10),
    ("pro", "Pro", 2980, 1000, 1, 2, 4, 60, 4, 4, "invoice", True, 20),
    ("enterprise", "Enterprise", 29800, 15000, 1, 2, 4, 300, 16, 4, "invoice", True, 30),
    ("unlimited", "Unlimited (internal)", 0, 0, 0, 0, 0, 0, 0, 0, "cycle", False, 90),
]
PACKS = [
    ("small", "100 credits", 100, 500, 10),
    ("medium", "500 credits", 500, 2000, 20),
    ("large", "2,000 credits", 2000, 6000, 30),
]


def upgrade() -> None:
    plans = op.create_table(
        "plans",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("display_name", sa.String(length=64), nullable=False),
        sa.Column("price", sa.Integer(), nullable=False),
        sa.Column("monthly_credits", sa.Integer(), nullable=False),
        sa.Column("credits_per_image_1k", sa.Integer(), nullable=False),
        sa.Column("credits_per_image_2k", sa.Integer(), nullable=False),
        sa.Column("credits_per_image_4k", sa.Integer(), nullable=False),
        sa.Column("requests_per_minute", sa.Integer(), nullable=False),
        sa.Column("concurrent_generations", sa.Integer(), nullable=False),
        sa.Column("images_per_request", sa.Integer(), nullable=False),
        sa.Column("renewal", sa.String(length=16), nullable=False),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_plans")),
    )
    packs = op.create_table(
        "credit_packs",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("display_name", sa.String(length=64), nullable=False),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("price", sa.Integer(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_credit_packs")),
    )
    op.bulk_insert(
        plans,
        [
            {
                "name": name,
                "display_name": display,
                "price": price,
                "monthly_credits": monthly,
                "credits_per_image_1k": per_1k,
                "credits_per_image_2k": per_2k,
                "credits_per_image_4k": per_4k,
                "requests_per_minute": rpm,
                "concurrent_generations": concurrent,
                "images_per_request": images,
                "renewal": renewal,
                "is_public": public,
                "sort_order": order,
            }
            for (
                name,
                display,
                price,
                monthly,
                per_1k,
                per_2k,
                per_4k,
                rpm,
                concurrent,
                images,
                renewal,
                public,
                order,
            ) in PLANS
        ],
    )
    op.bulk_insert(
        packs,
        [
            {
                "name": name,
                "display_name": display,
                "credits": credits,
                "price": price,
                "is_active": True,
                "sort_order": order,
            }
            for name, display, credits, price, order in PACKS
        ],
    )

    now = datetime.now(UTC)
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("plan", sa.String(length=32), nullable=False, server_default="free")
        )
        batch_op.add_column(sa.Column("password_hash", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column("allowance_credits", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("purchased_credits", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("cycle_started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("cycle_ends_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_accounts_plan_plans"), "plans", ["plan"], ["name"]
        )
        batch_op.create_check_constraint(
            op.f("ck_accounts_allowance_not_negative"), "allowance_credits >= 0"
        )
        batch_op.create_check_constraint(
            op.f("ck_accounts_purchased_not_negative"), "purchased_credits >= 0"
        )

    accounts = sa.table(
        "accounts",
        sa.column("role", sa.String),
        sa.column("plan", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("cycle_started_at", sa.DateTime(timezone=True)),
        sa.column("cycle_ends_at", sa.DateTime(timezone=True)),
    )
    # SQLite stores naive UTC text, as the app's UTCDateTime type writes it.
    stamp = now.replace(tzinfo=None) if op.get_bind().dialect.name == "sqlite" else now
    op.execute(
        accounts.update().values(
            plan=sa.case((accounts.c.role == "admin", "unlimited"), else_="free"),
            cycle_started_at=accounts.c.created_at,
            cycle_ends_at=stamp,
        )
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.alter_column(
            "cycle_started_at", existing_type=sa.DateTime(timezone=True), nullable=False
        )
        batch_op.alter_column(
            "cycle_ends_at", existing_type=sa.DateTime(timezone=True), nullable=False
        )

    op.create_table(
        "credit_ledger",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("allowance_amount", sa.Integer(), nullable=False),
        sa.Column("purchased_amount", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("reservation_id", sa.String(length=40), nullable=True),
        sa.Column("reference", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "amount = allowance_amount + purchased_amount",
            name=op.f("ck_credit_ledger_amount_is_sum_of_parts"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_credit_ledger_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_ledger")),
        sa.UniqueConstraint("reference", name=op.f("uq_credit_ledger_reference")),
    )
    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.create_index("ix_credit_ledger_account_id_id", ["account_id", "id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_credit_ledger_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_credit_ledger_reservation_id"), ["reservation_id"], unique=False
        )

    op.create_table(
        "credit_reservations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("generation_id", sa.String(length=40), nullable=False),
        sa.Column("api_key_id", sa.String(length=40), nullable=True),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("allowance_credits", sa.Integer(), nullable=False),
        sa.Column("purchased_credits", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_credit_reservations_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_reservations")),
    )
    with op.batch_alter_table("credit_reservations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_credit_reservations_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(
            "ix_credit_reservations_status_created_at", ["status", "created_at"], unique=False
        )

    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("credits", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("plan", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_generations_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_index("ix_generations_created_at")
        batch_op.drop_column("plan")
        batch_op.drop_column("credits")

    with op.batch_alter_table("credit_reservations", schema=None) as batch_op:
        batch_op.drop_index("ix_credit_reservations_status_created_at")
        batch_op.drop_index(batch_op.f("ix_credit_reservations_account_id"))
    op.drop_table("credit_reservations")

    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_ledger_reservation_id"))
        batch_op.drop_index(batch_op.f("ix_credit_ledger_created_at"))
        batch_op.drop_index("ix_credit_ledger_account_id_id")
    op.drop_table("credit_ledger")

    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_accounts_purchased_not_negative"), type_="check")
        batch_op.drop_constraint(op.f("ck_accounts_allowance_not_negative"), type_="check")
        batch_op.drop_constraint(batch_op.f("fk_accounts_plan_plans"), type_="foreignkey")
        batch_op.drop_column("cycle_ends_at")
        batch_op.drop_column("cycle_started_at")
        batch_op.drop_column("purchased_credits")
        batch_op.drop_column("allowance_credits")
        batch_op.drop_column("password_hash")
        batch_op.drop_column("plan")

    op.drop_table("credit_packs")
    op.drop_table("plans")
