"""Bulk jobs: one row per batch, one row per document. Documents are the unit of work.

A worker claims one document (`job_items` row) at a time under a lease; the job row only
counts outcomes. Every document carries its own quota reservation and serial from the
moment the batch is submitted (see `emeterai.jobs.service`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from emeterai.db import Base, BigId, UtcDateTime

JOB_STATES = ("queued", "running", "completed", "dead")
ITEM_STATES = ("queued", "running", "stamped", "failed", "dead")
WEBHOOK_STATES = ("pending", "delivered", "failed")


class Job(Base):
    """A batch. `completed`: every document stamped or refused; `dead`: some gave up."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    state: Mapped[str] = mapped_column(String(10), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), default=None)
    request_sha256: Mapped[str] = mapped_column(String(64))
    item_count: Mapped[int] = mapped_column(Integer)
    stamped_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    dead_count: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    webhook_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    webhook_secret: Mapped[str | None] = mapped_column(String(80), default=None)
    webhook_state: Mapped[str | None] = mapped_column(String(10), default=None)
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    webhook_next_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    purged_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)

    __table_args__ = (
        CheckConstraint("state IN ('queued', 'running', 'completed', 'dead')", name="state_known"),
        CheckConstraint("item_count >= 1", name="item_count_positive"),
        CheckConstraint("size_bytes > 0", name="size_positive"),
        CheckConstraint(
            "stamped_count >= 0 AND failed_count >= 0 AND dead_count >= 0 "
            "AND stamped_count + failed_count + dead_count <= item_count",
            name="counts_within_items",
        ),
        CheckConstraint(
            "(state IN ('completed', 'dead')) = (finished_at IS NOT NULL)",
            name="finished_has_time",
        ),
        CheckConstraint(
            "state <> 'completed' OR (dead_count = 0 "
            "AND stamped_count + failed_count = item_count)",
            name="completed_counts",
        ),
        CheckConstraint(
            "state <> 'dead' OR (dead_count > 0 "
            "AND stamped_count + failed_count + dead_count = item_count)",
            name="dead_counts",
        ),
        CheckConstraint("(webhook_url IS NULL) = (webhook_secret IS NULL)", name="webhook_signed"),
        CheckConstraint(
            "webhook_state IS NULL OR (webhook_url IS NOT NULL "
            "AND webhook_state IN ('pending', 'delivered', 'failed'))",
            name="webhook_state_known",
        ),
        CheckConstraint("webhook_attempts >= 0", name="webhook_attempts_non_negative"),
        # One batch per idempotency key and account (NULL keys never collide).
        UniqueConstraint("account_id", "idempotency_key", name="uq_jobs_account_idempotency_key"),
    )


class JobItem(Base):
    """One document of a batch.

    queued -> running -> stamped | failed | dead; running -> queued on a retryable error
    (with backoff) or when its lease runs out; dead -> queued when an operator retries.
    `serial` is the document's current reservation: its serial names the pending ledger
    transfer. It changes only after that serial was voided (expired, or dead-lettered).
    """

    __tablename__ = "job_items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    source_blob_key: Mapped[str | None] = mapped_column(String(64), default=None)
    source_sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    page: Mapped[int] = mapped_column(Integer)
    x_pt: Mapped[float | None] = mapped_column(Float, default=None)
    y_pt: Mapped[float | None] = mapped_column(Float, default=None)
    state: Mapped[str] = mapped_column(String(10))
    serial: Mapped[str | None] = mapped_column(
        ForeignKey("serials.serial"), unique=True, default=None
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime] = mapped_column(UtcDateTime)
    locked_by: Mapped[str | None] = mapped_column(String(80), default=None)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    error_code: Mapped[str | None] = mapped_column(String(40), default=None)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)

    __table_args__ = (
        UniqueConstraint("job_id", "position", name="uq_job_items_job_id_position"),
        CheckConstraint(
            "state IN ('queued', 'running', 'stamped', 'failed', 'dead')", name="state_known"
        ),
        CheckConstraint("position >= 1", name="position_positive"),
        CheckConstraint("page >= 1", name="page_positive"),
        CheckConstraint("size_bytes > 0", name="size_positive"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        CheckConstraint("(x_pt IS NULL) = (y_pt IS NULL)", name="position_complete"),
        CheckConstraint(
            "(state = 'running') = (locked_by IS NOT NULL AND locked_until IS NOT NULL)",
            name="running_is_leased",
        ),
        CheckConstraint(
            "(state IN ('failed', 'dead')) = (error_code IS NOT NULL)", name="failure_has_code"
        ),
        CheckConstraint(
            "(state IN ('stamped', 'failed', 'dead')) = (finished_at IS NOT NULL)",
            name="finished_has_time",
        ),
        CheckConstraint("state <> 'stamped' OR serial IS NOT NULL", name="stamped_has_serial"),
        Index("ix_job_items_claim", "state", "run_after"),
        Index("ix_job_items_lease", "state", "locked_until"),
        Index("ix_job_items_source_blob_key", "source_blob_key"),
    )
