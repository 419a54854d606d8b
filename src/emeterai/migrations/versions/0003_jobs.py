"""bulk jobs: jobs and job_items

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-24 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import emeterai.db

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("stamped_count", sa.Integer(), nullable=False),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        sa.Column("dead_count", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("webhook_url", sa.String(length=2000), nullable=True),
        sa.Column("webhook_secret", sa.String(length=80), nullable=True),
        sa.Column("webhook_state", sa.String(length=10), nullable=True),
        sa.Column("webhook_attempts", sa.Integer(), nullable=False),
        sa.Column("webhook_next_at", emeterai.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", emeterai.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", emeterai.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("purged_at", emeterai.db.UtcDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'completed', 'dead')", name=op.f("ck_jobs_state_known")
        ),
        sa.CheckConstraint("item_count >= 1", name=op.f("ck_jobs_item_count_positive")),
        sa.CheckConstraint("size_bytes > 0", name=op.f("ck_jobs_size_positive")),
        sa.CheckConstraint(
            "stamped_count >= 0 AND failed_count >= 0 AND dead_count >= 0 AND stamped_count + failed_count + dead_count <= item_count",
            name=op.f("ck_jobs_counts_within_items"),
        ),
        sa.CheckConstraint(
            "(state IN ('completed', 'dead')) = (finished_at IS NOT NULL)",
            name=op.f("ck_jobs_finished_has_time"),
        ),
        sa.CheckConstraint(
            "state <> 'completed' OR (dead_count = 0 AND stamped_count + failed_count = item_count)",
            name=op.f("ck_jobs_completed_counts"),
        ),
        sa.CheckConstraint(
            "state <> 'dead' OR (dead_count > 0 AND stamped_count + failed_count + dead_count = item_count)",
            name=op.f("ck_jobs_dead_counts"),
        ),
        sa.CheckConstraint(
            "(webhook_url IS NULL) = (webhook_secret IS NULL)", name=op.f("ck_jobs_webhook_signed")
        ),
        sa.CheckConstraint(
            "webhook_state IS NULL OR (webhook_url IS NOT NULL AND webhook_state IN ('pending', 'delivered', 'failed'))",
            name=op.f("ck_jobs_webhook_state_known"),
        ),
        sa.CheckConstraint(
            "webhook_attempts >= 0", name=op.f("ck_jobs_webhook_attempts_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_jobs_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint(
            "account_id", "idempotency_key", name="uq_jobs_account_idempotency_key"
        ),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_state"), ["state"], unique=False)

    op.create_table(
        "job_items",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("job_id", BIG_ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("source_blob_key", sa.String(length=64), nullable=True),
        sa.Column("source_sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False),
        sa.Column("x_pt", sa.Float(), nullable=True),
        sa.Column("y_pt", sa.Float(), nullable=True),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("serial", sa.String(length=22), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("run_after", emeterai.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("locked_by", sa.String(length=80), nullable=True),
        sa.Column("locked_until", emeterai.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", emeterai.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("error_code", sa.String(length=40), nullable=True),
        sa.Column("started_at", emeterai.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", emeterai.db.UtcDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'stamped', 'failed', 'dead')",
            name=op.f("ck_job_items_state_known"),
        ),
        sa.CheckConstraint("position >= 1", name=op.f("ck_job_items_position_positive")),
        sa.CheckConstraint("page >= 1", name=op.f("ck_job_items_page_positive")),
        sa.CheckConstraint("size_bytes > 0", name=op.f("ck_job_items_size_positive")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_job_items_attempts_non_negative")),
        sa.CheckConstraint(
            "(x_pt IS NULL) = (y_pt IS NULL)", name=op.f("ck_job_items_position_complete")
        ),
        sa.CheckConstraint(
            "(state = 'running') = (locked_by IS NOT NULL AND locked_until IS NOT NULL)",
            name=op.f("ck_job_items_running_is_leased"),
        ),
        sa.CheckConstraint(
            "(state IN ('failed', 'dead')) = (error_code IS NOT NULL)",
            name=op.f("ck_job_items_failure_has_code"),
        ),
        sa.CheckConstraint(
            "(state IN ('stamped', 'failed', 'dead')) = (finished_at IS NOT NULL)",
            name=op.f("ck_job_items_finished_has_time"),
        ),
        sa.CheckConstraint(
            "state <> 'stamped' OR serial IS NOT NULL", name=op.f("ck_job_items_stamped_has_serial")
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_items_job_id_jobs")),
        sa.ForeignKeyConstraint(
            ["serial"], ["serials.serial"], name=op.f("fk_job_items_serial_serials")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_items")),
        sa.UniqueConstraint("job_id", "position", name="uq_job_items_job_id_position"),
        sa.UniqueConstraint("serial", name=op.f("uq_job_items_serial")),
    )
    with op.batch_alter_table("job_items", schema=None) as batch_op:
        batch_op.create_index("ix_job_items_claim", ["state", "run_after"], unique=False)
        batch_op.create_index("ix_job_items_lease", ["state", "locked_until"], unique=False)
        batch_op.create_index("ix_job_items_source_blob_key", ["source_blob_key"], unique=False)


def downgrade() -> None:
    op.drop_table("job_items")
    op.drop_table("jobs")
