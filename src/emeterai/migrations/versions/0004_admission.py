"""admission: the line's counters and the status samples (PostgreSQL deployments)

On SQLite the same tables live in a separate scratch file, DATA_DIR/admission.db; the
copies created here in the main database are then unused. See docs/admission.md.

Revision ID: 0004
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "admission_lanes",
        sa.Column("lane", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("issued", sa.BigInteger(), nullable=False),
        sa.Column("admitted", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("lane >= 0 AND lane <= 2", name=op.f("ck_admission_lanes_lane_known")),
        sa.CheckConstraint(
            "admitted >= 0 AND admitted <= issued",
            name=op.f("ck_admission_lanes_admitted_within_issued"),
        ),
        sa.PrimaryKeyConstraint("lane", name=op.f("pk_admission_lanes")),
    )
    op.create_table(
        "admission_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("credit", sa.Float(), nullable=False),
        sa.Column("budget_total", sa.Float(), nullable=False),
        sa.Column("ticked_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_admission_state_single_row")),
        sa.CheckConstraint("credit >= 0", name=op.f("ck_admission_state_credit_non_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admission_state")),
    )
    op.create_table(
        "admission_samples",
        sa.Column("minute_ms", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("process", sa.String(length=64), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors_5xx", sa.BigInteger(), nullable=False),
        sa.Column("rejected_429", sa.BigInteger(), nullable=False),
        sa.Column("queue_max", sa.BigInteger(), nullable=False),
        sa.Column("wait_s_max", sa.Float(), nullable=False),
        sa.CheckConstraint(
            "requests >= 0 AND errors_5xx >= 0 AND rejected_429 >= 0",
            name=op.f("ck_admission_samples_counts"),
        ),
        sa.PrimaryKeyConstraint("minute_ms", "process", name=op.f("pk_admission_samples")),
    )
    op.bulk_insert(
        sa.table("admission_lanes", sa.column("lane"), sa.column("issued"), sa.column("admitted")),
        [{"lane": lane, "issued": 0, "admitted": 0} for lane in range(3)],
    )
    op.bulk_insert(
        sa.table(
            "admission_state",
            sa.column("id"),
            sa.column("credit"),
            sa.column("budget_total"),
            sa.column("ticked_ms"),
        ),
        [{"id": 1, "credit": 0.0, "budget_total": 0.0, "ticked_ms": 0}],
    )


def downgrade() -> None:
    op.drop_table("admission_samples")
    op.drop_table("admission_state")
    op.drop_table("admission_lanes")
