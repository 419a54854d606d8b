"""web accounts: passwords, sessions, reset links, login throttle, console roles

Revision ID: 0005
Revises: 0001
Create Date: 2026-11-24 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import emeterai.db

revision: str = "0005"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _utc() -> emeterai.db.UtcDateTime:
    return emeterai.db.UtcDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "account_passwords",
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_account_passwords_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_passwords")),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id_sha256", sa.String(length=64), nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.Column("ended_at", _utc(), nullable=True),
        sa.CheckConstraint("length(id_sha256) = 64", name=op.f("ck_web_sessions_digest_length")),
        sa.CheckConstraint(
            "expires_at > created_at", name=op.f("ck_web_sessions_expires_after_created")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_web_sessions_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id_sha256", name=op.f("pk_web_sessions")),
    )
    op.create_index(op.f("ix_web_sessions_account_id"), "web_sessions", ["account_id"])
    op.create_index(op.f("ix_web_sessions_expires_at"), "web_sessions", ["expires_at"])
    op.create_table(
        "password_reset_tokens",
        sa.Column("id_sha256", sa.String(length=64), nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.Column("used_at", _utc(), nullable=True),
        sa.CheckConstraint(
            "length(id_sha256) = 64", name=op.f("ck_password_reset_tokens_digest_length")
        ),
        sa.CheckConstraint(
            "expires_at > created_at", name=op.f("ck_password_reset_tokens_expires_after_created")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_password_reset_tokens_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("id_sha256", name=op.f("pk_password_reset_tokens")),
    )
    op.create_index(
        op.f("ix_password_reset_tokens_account_id"), "password_reset_tokens", ["account_id"]
    )
    op.create_table(
        "login_throttles",
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", _utc(), nullable=False),
        sa.Column("locked_until", _utc(), nullable=True),
        sa.CheckConstraint("failures >= 0", name=op.f("ck_login_throttles_failures_not_negative")),
        sa.PrimaryKeyConstraint("key_sha256", name=op.f("pk_login_throttles")),
    )
    op.create_table(
        "account_roles",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.CheckConstraint(
            "role IN ('issuer', 'channel')", name=op.f("ck_account_roles_role_known")
        ),
        sa.CheckConstraint(
            "role = 'channel' OR scope = ''", name=op.f("ck_account_roles_issuer_unscoped")
        ),
        sa.CheckConstraint(
            "role = 'issuer' OR length(scope) > 0", name=op.f("ck_account_roles_channel_scoped")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_account_roles_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_roles")),
        sa.UniqueConstraint(
            "account_id", "role", "scope", name=op.f("uq_account_roles_account_id")
        ),
    )
    op.create_index(op.f("ix_account_roles_account_id"), "account_roles", ["account_id"])


def downgrade() -> None:
    op.drop_table("account_roles")
    op.drop_table("login_throttles")
    op.drop_table("password_reset_tokens")
    op.drop_table("web_sessions")
    op.drop_table("account_passwords")
