"""channels: sales channels, orders, payments, rejections

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import emeterai.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, emeterai.db.UtcDateTime(timezone=True), nullable=nullable)


def _ledger_fk(table: str, column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        ["ledger_transfers.id" if "transfer" in column else "ledger_accounts.id"],
        name=op.f(
            f"fk_{table}_{column}_{'ledger_transfers' if 'transfer' in column else 'ledger_accounts'}"
        ),
    )


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("fee_rupiah", sa.BigInteger(), nullable=False),
        sa.Column("refund_fee_rupiah", sa.BigInteger(), nullable=False),
        sa.Column("credit_limit", sa.BigInteger(), nullable=False),
        sa.Column("credit_used", sa.BigInteger(), nullable=False),
        sa.Column("order_ttl_s", sa.Integer(), nullable=False),
        sa.Column("stock_account_id", BIG_ID, nullable=False),
        sa.Column("collected_account_id", BIG_ID, nullable=False),
        sa.Column("duty_account_id", BIG_ID, nullable=False),
        sa.Column("fees_account_id", BIG_ID, nullable=False),
        _when("created_at"),
        sa.CheckConstraint(
            "kind IN ('shop', 'distributor', 'reseller')", name=op.f("ck_channels_kind_known")
        ),
        sa.CheckConstraint(
            "fee_rupiah >= 0 AND fee_rupiah <= 1000000", name=op.f("ck_channels_fee_bounded")
        ),
        sa.CheckConstraint(
            "refund_fee_rupiah >= 0 AND refund_fee_rupiah <= 1000000",
            name=op.f("ck_channels_refund_fee_bounded"),
        ),
        sa.CheckConstraint(
            "credit_limit >= 0 AND credit_used >= 0", name=op.f("ck_channels_credit_non_negative")
        ),
        sa.CheckConstraint(
            "order_ttl_s >= 60 AND order_ttl_s <= 604800",
            name=op.f("ck_channels_order_ttl_bounded"),
        ),
        _ledger_fk("channels", "stock_account_id"),
        _ledger_fk("channels", "collected_account_id"),
        _ledger_fk("channels", "duty_account_id"),
        _ledger_fk("channels", "fees_account_id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channels")),
        sa.UniqueConstraint("name", name=op.f("uq_channels_name")),
        sa.UniqueConstraint("stock_account_id", name=op.f("uq_channels_stock_account_id")),
        sa.UniqueConstraint("collected_account_id", name=op.f("uq_channels_collected_account_id")),
        sa.UniqueConstraint("duty_account_id", name=op.f("uq_channels_duty_account_id")),
        sa.UniqueConstraint("fees_account_id", name=op.f("uq_channels_fees_account_id")),
    )
    op.create_table(
        "channel_api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", BIG_ID, nullable=False),
        sa.Column("secret_hash", sa.String(length=255), nullable=False),
        _when("created_at"),
        _when("expires_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channels.id"], name=op.f("fk_channel_api_keys_channel_id_channels")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_api_keys")),
    )
    op.create_index(
        op.f("ix_channel_api_keys_channel_id"), "channel_api_keys", ["channel_id"], unique=False
    )
    op.create_table(
        "channel_webhook_secrets",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("channel_id", BIG_ID, nullable=False),
        sa.Column("secret_encrypted", sa.String(length=400), nullable=False),
        _when("created_at"),
        _when("expires_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_channel_webhook_secrets_channel_id_channels"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_webhook_secrets")),
    )
    op.create_index(
        op.f("ix_channel_webhook_secrets_channel_id"),
        "channel_webhook_secrets",
        ["channel_id"],
        unique=False,
    )
    op.create_table(
        "channel_orders",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("channel_id", BIG_ID, nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("unit_price_rupiah", sa.BigInteger(), nullable=False),
        sa.Column("amount_rupiah", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("request_key", sa.String(length=128), nullable=True),
        sa.Column("refunded_count", sa.Integer(), nullable=False),
        _when("created_at"),
        _when("expires_at"),
        _when("credited_at", nullable=True),
        sa.Column("credit_transfer_id", BIG_ID, nullable=True),
        sa.Column("refund_transfer_id", BIG_ID, nullable=True),
        sa.CheckConstraint(
            "count >= 1 AND count <= 10000", name=op.f("ck_channel_orders_count_bounded")
        ),
        sa.CheckConstraint(
            "amount_rupiah = count * unit_price_rupiah",
            name=op.f("ck_channel_orders_amount_is_price"),
        ),
        sa.CheckConstraint(
            "status IN ('awaiting_payment', 'paid', 'credited', 'expired', 'refunded')",
            name=op.f("ck_channel_orders_status_known"),
        ),
        sa.CheckConstraint(
            "(status IN ('credited', 'refunded')) = (credit_transfer_id IS NOT NULL)",
            name=op.f("ck_channel_orders_credited_has_transfer"),
        ),
        sa.CheckConstraint(
            "(status = 'refunded') = (refund_transfer_id IS NOT NULL)",
            name=op.f("ck_channel_orders_refunded_has_transfer"),
        ),
        sa.CheckConstraint(
            "refunded_count >= 0 AND refunded_count <= count",
            name=op.f("ck_channel_orders_refund_within_count"),
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channels.id"], name=op.f("fk_channel_orders_channel_id_channels")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_channel_orders_account_id_accounts")
        ),
        _ledger_fk("channel_orders", "credit_transfer_id"),
        _ledger_fk("channel_orders", "refund_transfer_id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_orders")),
        sa.UniqueConstraint("channel_id", "request_key", name="uq_channel_orders_request_key"),
        sa.UniqueConstraint(
            "credit_transfer_id", name=op.f("uq_channel_orders_credit_transfer_id")
        ),
        sa.UniqueConstraint(
            "refund_transfer_id", name=op.f("uq_channel_orders_refund_transfer_id")
        ),
    )
    op.create_index(
        "ix_channel_orders_account_created",
        "channel_orders",
        ["account_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_channel_orders_channel_created",
        "channel_orders",
        ["channel_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "channel_order_events",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("detail", sa.String(length=300), nullable=False),
        _when("created_at"),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["channel_orders.id"],
            name=op.f("fk_channel_order_events_order_id_channel_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_order_events")),
    )
    op.create_index(
        op.f("ix_channel_order_events_order_id"),
        "channel_order_events",
        ["order_id"],
        unique=False,
    )
    op.create_table(
        "channel_payments",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("channel_id", BIG_ID, nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("payment_reference", sa.String(length=128), nullable=False),
        sa.Column("amount_rupiah", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        _when("received_at"),
        sa.Column("credit_transfer_id", BIG_ID, nullable=False),
        sa.CheckConstraint("amount_rupiah > 0", name=op.f("ck_channel_payments_amount_positive")),
        sa.CheckConstraint(
            "source IN ('webhook', 'reconcile', 'sandbox')",
            name=op.f("ck_channel_payments_source_known"),
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channels.id"], name=op.f("fk_channel_payments_channel_id_channels")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["channel_orders.id"],
            name=op.f("fk_channel_payments_order_id_channel_orders"),
        ),
        _ledger_fk("channel_payments", "credit_transfer_id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_payments")),
        sa.UniqueConstraint(
            "channel_id", "payment_reference", name="uq_channel_payments_channel_reference"
        ),
        sa.UniqueConstraint("order_id", name=op.f("uq_channel_payments_order_id")),
        sa.UniqueConstraint(
            "credit_transfer_id", name=op.f("uq_channel_payments_credit_transfer_id")
        ),
    )
    op.create_index(
        op.f("ix_channel_payments_received_at"), "channel_payments", ["received_at"], unique=False
    )
    op.create_table(
        "channel_webhook_nonces",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("channel_id", BIG_ID, nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("timestamp_s", sa.BigInteger(), nullable=False),
        _when("received_at"),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_channel_webhook_nonces_channel_id_channels"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_webhook_nonces")),
        sa.UniqueConstraint("channel_id", "signature", name="uq_channel_webhook_nonces_signature"),
    )
    op.create_index(
        op.f("ix_channel_webhook_nonces_received_at"),
        "channel_webhook_nonces",
        ["received_at"],
        unique=False,
    )
    op.create_table(
        "channel_rejections",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("channel_id", BIG_ID, nullable=True),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=True),
        sa.Column("payment_reference", sa.String(length=128), nullable=True),
        sa.Column("amount_rupiah", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.String(length=300), nullable=False),
        _when("received_at"),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channels.id"], name=op.f("fk_channel_rejections_channel_id_channels")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_rejections")),
    )
    op.create_index(
        op.f("ix_channel_rejections_received_at"),
        "channel_rejections",
        ["received_at"],
        unique=False,
    )


def downgrade() -> None:
    for table, indexes in (
        ("channel_rejections", ["ix_channel_rejections_received_at"]),
        ("channel_webhook_nonces", ["ix_channel_webhook_nonces_received_at"]),
        ("channel_payments", ["ix_channel_payments_received_at"]),
        ("channel_order_events", ["ix_channel_order_events_order_id"]),
        (
            "channel_orders",
            ["ix_channel_orders_channel_created", "ix_channel_orders_account_created"],
        ),
        ("channel_webhook_secrets", ["ix_channel_webhook_secrets_channel_id"]),
        ("channel_api_keys", ["ix_channel_api_keys_channel_id"]),
        ("channels", []),
    ):
        for index in indexes:
            op.drop_index(index, table_name=table)
        op.drop_table(table)
