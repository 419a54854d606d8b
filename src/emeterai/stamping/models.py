"""Stamp records: one per posted consumption and per used serial, always."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from emeterai.db import Base, BigId, UtcDateTime


class Stamp(Base):
    __tablename__ = "stamps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    serial: Mapped[str] = mapped_column(ForeignKey("serials.serial"), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    post_transfer_id: Mapped[int] = mapped_column(ForeignKey("ledger_transfers.id"), unique=True)
    source_sha256: Mapped[str] = mapped_column(String(64))
    # The stamped document exactly as issued: the signed revision's bytes.
    document_sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    page: Mapped[int] = mapped_column(Integer)
    x_pt: Mapped[float] = mapped_column(Float)
    y_pt: Mapped[float] = mapped_column(Float)
    blob_key: Mapped[str | None] = mapped_column(String(64), default=None)
    signed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)

    __table_args__ = (
        CheckConstraint("size_bytes > 0", name="size_positive"),
        CheckConstraint("page >= 1", name="page_positive"),
        CheckConstraint("length(document_sha256) = 64", name="digest_length"),
    )
