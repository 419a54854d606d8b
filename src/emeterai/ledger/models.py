"""Ledger tables, after TigerBeetle: accounts with running balances, append-only transfers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from emeterai.db import Base, BigId, UtcDateTime

# Ledgers keep units apart: a transfer never crosses ledgers.
LEDGER_QUOTA = 1  # unit: one e-Meterai (one stamp)
LEDGER_RUPIAH = 2  # unit: one rupiah

TRANSFER_KINDS = ("single", "pending", "post", "void", "expire")


class LedgerAccount(Base):
    __tablename__ = "ledger_accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ledger: Mapped[int] = mapped_column(Integer)
    # A stable, unique name: "issuer:quota:supply", "user:42:quota", "user:42:quota:used".
    code: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    owner_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("accounts.id"), index=True, default=None
    )
    debits_must_not_exceed_credits: Mapped[bool] = mapped_column(Boolean)
    debits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    debits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        CheckConstraint(
            "debits_pending >= 0 AND debits_posted >= 0 "
            "AND credits_pending >= 0 AND credits_posted >= 0",
            name="balances_non_negative",
        ),
        # Pending debits count as spent: a reservation can never overdraw the account.
        CheckConstraint(
            "NOT debits_must_not_exceed_credits "
            "OR debits_pending + debits_posted <= credits_posted",
            name="debits_within_credits",
        ),
    )


class Transfer(Base):
    """One immutable movement. Rows are only ever inserted, never updated or deleted.

    `pending` reserves an amount; exactly one of `post`, `void` or `expire` may later
    settle it, which the unique `pending_id` enforces in the database.
    """

    __tablename__ = "ledger_transfers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ledger: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10))
    debit_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    credit_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    pending_id: Mapped[int | None] = mapped_column(
        ForeignKey("ledger_transfers.id"), unique=True, default=None
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    memo: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("debit_account_id <> credit_account_id", name="distinct_accounts"),
        CheckConstraint(
            "kind IN ('single', 'pending', 'post', 'void', 'expire')", name="kind_known"
        ),
        CheckConstraint(
            "(kind IN ('post', 'void', 'expire')) = (pending_id IS NOT NULL)",
            name="settlement_names_pending",
        ),
        CheckConstraint("(kind = 'pending') = (expires_at IS NOT NULL)", name="pending_has_expiry"),
        Index("ix_ledger_transfers_pending_expiry", "kind", "expires_at"),
    )
