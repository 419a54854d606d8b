"""A user's stamped documents as the website offers them: downloadable again within a
retention period (`EMETERAI_STAMP_RETENTION_DAYS`, 90 days by default)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from emeterai.blobs import BlobStore
from emeterai.errors import SerialNotFound, StampRetentionOver
from emeterai.serials import normalise_serial
from emeterai.stamping.models import Stamp

__all__ = ["StampEntry", "retained_document", "stamp_entries", "stamp_entry"]


@dataclass(frozen=True)
class StampEntry:
    serial: str
    page: int
    x_pt: float
    y_pt: float
    size_bytes: int
    document_sha256: str
    signed_at: datetime
    downloadable_until: datetime

    def downloadable(self, now: datetime) -> bool:
        return now < self.downloadable_until


def _entry(stamp: Stamp, retention_days: int) -> StampEntry:
    return StampEntry(
        serial=stamp.serial,
        page=stamp.page,
        x_pt=stamp.x_pt,
        y_pt=stamp.y_pt,
        size_bytes=stamp.size_bytes,
        document_sha256=stamp.document_sha256,
        signed_at=stamp.signed_at,
        downloadable_until=stamp.signed_at + timedelta(days=retention_days),
    )


def stamp_entries(
    session: Session,
    account_id: int,
    *,
    retention_days: int,
    limit: int,
    before_id: int | None = None,
) -> tuple[list[StampEntry], int | None]:
    """Newest first; returns the page and the `before_id` of the next one (or None)."""
    limit = max(1, min(limit, 100))
    query = select(Stamp).where(Stamp.account_id == account_id)
    if before_id is not None:
        query = query.where(Stamp.id < before_id)
    rows = list(session.scalars(query.order_by(Stamp.id.desc()).limit(limit + 1)).all())
    more = len(rows) > limit
    return [_entry(row, retention_days) for row in rows[:limit]], (
        rows[limit - 1].id if more else None
    )


def stamp_entry(
    session: Session, account_id: int, serial: str, *, retention_days: int
) -> StampEntry:
    stamp = session.scalars(
        select(Stamp).where(
            Stamp.serial == normalise_serial(serial), Stamp.account_id == account_id
        )
    ).first()
    if stamp is None:
        raise SerialNotFound(f"you have no stamp with serial {serial[:30]}")
    return _entry(stamp, retention_days)


def retained_document(
    session: Session,
    blobs: BlobStore,
    account_id: int,
    serial: str,
    *,
    retention_days: int,
    now: datetime,
) -> tuple[StampEntry, bytes]:
    """The stamped PDF again, to its owner, within the retention period."""
    entry = stamp_entry(session, account_id, serial, retention_days=retention_days)
    if not entry.downloadable(now):
        raise StampRetentionOver(
            f"stamp {entry.serial} was made on {entry.signed_at:%Y-%m-%d}; "
            f"documents are kept {retention_days} days"
        )
    stamp = session.scalars(select(Stamp).where(Stamp.serial == entry.serial)).one()
    document = blobs.get(stamp.blob_key) if stamp.blob_key else None
    if document is None:
        raise StampRetentionOver(f"the stamped document {entry.serial} is no longer kept")
    return entry, document
