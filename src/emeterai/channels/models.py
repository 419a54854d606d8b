"""Tables of the sales channels: channels, their keys, orders, payments, rejections."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from emeterai.db import Base, BigId, UtcDateTime

CHANNEL_KINDS = ("shop", "distributor", "reseller")
ORDER_STATUSES = ("awaiting_payment", "paid", "credited", "expired", "refunded")
PAYMENT_SOURCES = ("webhook", "reconcile", "sandbox")


class Channel(Base):
    """A seller of quota. Its ledger accounts are opened with it and named here.

    Quota ledger: `channel:<id>:stock` (flagged, never negative). Rupiah ledger:
    `channel:<id>:collected` (what the channel took from users on the issuer's behalf),
    `channel:<id>:duty` (face value, owed to the tax authority) and `channel:<id>:fees`.
    """

    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(60), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    fee_rupiah: Mapped[int] = mapped_column(BigInteger)  # per stamp, on top of face value
    refund_fee_rupiah: Mapped[int] = mapped_column(BigInteger)  # per refund (transfer cost)
    # Stamps the issuer advances on credit by automatic top-up; `credit_used` is what is
    # outstanding (deposits pay it back first).
    credit_limit: Mapped[int] = mapped_column(BigInteger)
    credit_used: Mapped[int] = mapped_column(BigInteger)
    order_ttl_s: Mapped[int] = mapped_column(Integer)
    stock_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), unique=True)
    collected_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), unique=True)
    duty_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), unique=True)
    fees_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        CheckConstraint("kind IN ('shop', 'distributor', 'reseller')", name="kind_known"),
        CheckConstraint("fee_rupiah >= 0 AND fee_rupiah <= 1000000", name="fee_bounded"),
        CheckConstraint(
            "refund_fee_rupiah >= 0 AND refund_fee_rupiah <= 1000000", name="refund_fee_bounded"
        ),
        CheckConstraint("credit_limit >= 0 AND credit_used >= 0", name="credit_non_negative"),
        CheckConstraint("order_ttl_s >= 60 AND order_ttl_s <= 604800", name="order_ttl_bounded"),
    )


class ChannelApiKey(Base):
    """A key is `emc_<id>_<secret>`; only an Argon2 hash of the secret is stored."""

    __tablename__ = "channel_api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Set when a newer key replaces it: the old key works until then (the overlap window).
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class ChannelWebhookSecret(Base):
    """The HMAC secret must be usable, so it is stored encrypted (Fernet), never hashed."""

    __tablename__ = "channel_webhook_secrets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id"), index=True)
    secret_encrypted: Mapped[str] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class Order(Base):
    """A purchase of `count` stamps. awaiting_payment -> paid -> credited -> refunded;
    awaiting_payment -> expired -> paid (a late payment still credits)."""

    __tablename__ = "channel_orders"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    count: Mapped[int] = mapped_column(Integer)
    unit_price_rupiah: Mapped[int] = mapped_column(BigInteger)
    amount_rupiah: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20))
    # The channel's Idempotency-Key for the create request: a retry returns this order.
    request_key: Mapped[str | None] = mapped_column(String(128), default=None)
    refunded_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    credited_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    credit_transfer_id: Mapped[int | None] = mapped_column(
        ForeignKey("ledger_transfers.id"), unique=True, default=None
    )
    refund_transfer_id: Mapped[int | None] = mapped_column(
        ForeignKey("ledger_transfers.id"), unique=True, default=None
    )

    __table_args__ = (
        CheckConstraint("count >= 1 AND count <= 10000", name="count_bounded"),
        CheckConstraint("amount_rupiah = count * unit_price_rupiah", name="amount_is_price"),
        CheckConstraint(
            "status IN ('awaiting_payment', 'paid', 'credited', 'expired', 'refunded')",
            name="status_known",
        ),
        CheckConstraint(
            "(status IN ('credited', 'refunded')) = (credit_transfer_id IS NOT NULL)",
            name="credited_has_transfer",
        ),
        CheckConstraint(
            "(status = 'refunded') = (refund_transfer_id IS NOT NULL)",
            name="refunded_has_transfer",
        ),
        CheckConstraint(
            "refunded_count >= 0 AND refunded_count <= count", name="refund_within_count"
        ),
        UniqueConstraint("channel_id", "request_key", name="uq_channel_orders_request_key"),
        Index("ix_channel_orders_account_created", "account_id", "created_at"),
        Index("ix_channel_orders_channel_created", "channel_id", "created_at"),
    )


class OrderEvent(Base):
    """The order's timeline, as the user sees it."""

    __tablename__ = "channel_order_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("channel_orders.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Payment(Base):
    """A confirmed payment. One per order and one per (channel, payment reference): the
    two UNIQUE constraints are what make crediting exactly-once under any concurrency."""

    __tablename__ = "channel_payments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id"))
    order_id: Mapped[str] = mapped_column(ForeignKey("channel_orders.id"), unique=True)
    payment_reference: Mapped[str] = mapped_column(String(128))
    amount_rupiah: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(20))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    credit_transfer_id: Mapped[int] = mapped_column(ForeignKey("ledger_transfers.id"), unique=True)

    __table_args__ = (
        CheckConstraint("amount_rupiah > 0", name="amount_positive"),
        CheckConstraint("source IN ('webhook', 'reconcile', 'sandbox')", name="source_known"),
        UniqueConstraint(
            "channel_id", "payment_reference", name="uq_channel_payments_channel_reference"
        ),
    )


class WebhookNonce(Base):
    """Signatures seen within the replay window: the same signed message is refused twice."""

    __tablename__ = "channel_webhook_nonces"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id"))
    signature: Mapped[str] = mapped_column(String(64))
    timestamp_s: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)

    __table_args__ = (
        UniqueConstraint("channel_id", "signature", name="uq_channel_webhook_nonces_signature"),
    )


class Rejection(Base):
    """A refused payment confirmation, kept for the operator (bounded text)."""

    __tablename__ = "channel_rejections"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id"), default=None)
    code: Mapped[str] = mapped_column(String(40))
    order_id: Mapped[str | None] = mapped_column(String(40), default=None)
    payment_reference: Mapped[str | None] = mapped_column(String(128), default=None)
    amount_rupiah: Mapped[int | None] = mapped_column(BigInteger, default=None)
    detail: Mapped[str] = mapped_column(String(300), default="")
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
