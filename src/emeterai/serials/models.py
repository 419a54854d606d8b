"""The serial registry."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from emeterai.db import Base, UtcDateTime

SERIAL_STATES = ("reserved", "used", "voided", "revoked")


class Serial(Base):
    """One serial, minted for one stamping attempt and never reused.

    reserved -> used -> revoked, or reserved -> voided (the attempt failed or expired).
    """

    __tablename__ = "serials"

    serial: Mapped[str] = mapped_column(String(22), primary_key=True)
    state: Mapped[str] = mapped_column(String(10))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    reservation_transfer_id: Mapped[int] = mapped_column(
        ForeignKey("ledger_transfers.id"), unique=True
    )
    # The caller's idempotency key and a digest of what it asked for (document + placement).
    idempotency_key: Mapped[str | None] = mapped_column(String(128), default=None)
    request_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    revoked_reason: Mapped[str | None] = mapped_column(String(500), default=None)

    __table_args__ = (
        CheckConstraint("length(serial) = 22", name="serial_length"),
        CheckConstraint("state IN ('reserved', 'used', 'voided', 'revoked')", name="state_known"),
        CheckConstraint(
            "(state IN ('used', 'revoked')) = (used_at IS NOT NULL)", name="used_has_time"
        ),
        CheckConstraint("(state = 'revoked') = (revoked_at IS NOT NULL)", name="revoked_has_time"),
        # One live attempt per idempotency key; voided attempts do not block a retry.
        Index(
            "uq_serials_live_idempotency_key",
            "account_id",
            "idempotency_key",
            unique=True,
            sqlite_where=text("state <> 'voided' AND idempotency_key IS NOT NULL"),
            postgresql_where=text("state <> 'voided' AND idempotency_key IS NOT NULL"),
        ),
    )
