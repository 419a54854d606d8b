"""Retention: stamped outputs and batch sources are deleted after the retention period.

What stays forever: the ledger, the serials, the stamp records with their hashes (so
verification still answers GENUINE for a kept copy). What goes after
`EMETERAI_STAMP_RETENTION_DAYS`: the stamped PDFs in the blob store, and the uploaded
sources of batches that finished that long ago. A download after that answers
STAMP_RETENTION_OVER (410).

The rows are updated and committed first, the files deleted after: a crash in between
leaves an unreferenced file (harmless), never a row that names a missing file. Blobs are
content-addressed, so a key is deleted only when no row names it any more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from emeterai.blobs import BlobStore
from emeterai.clock import Clock
from emeterai.config import Settings
from emeterai.db import transaction
from emeterai.jobs.models import Job, JobItem
from emeterai.stamping.models import Stamp

BATCH_MAX = 500
ROUNDS_MAX = 10_000


@dataclass(frozen=True)
class PurgeBatch:
    stamps: int
    jobs: int
    keys: tuple[str, ...]


@dataclass(frozen=True)
class PurgeReport:
    stamps: int
    jobs: int
    blobs_deleted: int


def purge_due(session: Session, *, now: datetime, retention_days: int, limit: int) -> PurgeBatch:
    """Forget the blob keys of what is past retention; returns the keys now unreferenced."""
    cutoff = now - timedelta(days=retention_days)
    stamps = session.scalars(
        select(Stamp)
        .where(Stamp.blob_key.is_not(None), Stamp.created_at < cutoff)
        .order_by(Stamp.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    candidates = {stamp.blob_key for stamp in stamps if stamp.blob_key}
    for stamp in stamps:
        stamp.blob_key = None
    jobs = session.scalars(
        select(Job)
        .where(Job.finished_at.is_not(None), Job.finished_at < cutoff, Job.purged_at.is_(None))
        .order_by(Job.id)
        .limit(max(1, limit // 50))
        .with_for_update(skip_locked=True)
    ).all()
    for job in jobs:
        items = session.scalars(
            select(JobItem).where(JobItem.job_id == job.id, JobItem.source_blob_key.is_not(None))
        ).all()
        for item in items:
            candidates.add(item.source_blob_key or "")
            item.source_blob_key = None
        job.purged_at = now
    session.flush()
    candidates.discard("")
    if not candidates:
        return PurgeBatch(len(stamps), len(jobs), ())
    still = set(
        session.scalars(select(Stamp.blob_key).where(Stamp.blob_key.in_(candidates))).all()
    ) | set(
        session.scalars(
            select(JobItem.source_blob_key).where(JobItem.source_blob_key.in_(candidates))
        ).all()
    )
    return PurgeBatch(len(stamps), len(jobs), tuple(sorted(candidates - still)))


def purge_retention(
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    *,
    settings: Settings,
    clock: Clock,
    retention_days: int | None = None,
) -> PurgeReport:
    days = settings.stamp_retention_days if retention_days is None else retention_days
    stamps = jobs = deleted = 0
    for _ in range(ROUNDS_MAX):
        with transaction(sessions) as session:
            batch = purge_due(session, now=clock.now(), retention_days=days, limit=BATCH_MAX)
        for key in batch.keys:  # after the commit: no side effect before it
            blobs.delete(key)
        stamps, jobs, deleted = stamps + batch.stamps, jobs + batch.jobs, deleted + len(batch.keys)
        if batch.stamps == 0 and batch.jobs == 0:
            break
    return PurgeReport(stamps=stamps, jobs=jobs, blobs_deleted=deleted)
