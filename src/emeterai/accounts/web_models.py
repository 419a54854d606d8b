"""What a person needs to use the website: a password, sessions, reset links, a throttle,
and roles for the consoles. API tokens stay in `accounts.models`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from emeterai.db import Base, BigId, UtcDateTime


class AccountPassword(Base):
    """One Argon2 hash per account; the password itself is never stored."""

    __tablename__ = "account_passwords"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WebSession(Base):
    """A server-side session. The cookie holds a random secret; only its SHA-256 is kept,
    so a copy of the database cannot be replayed as cookies."""

    __tablename__ = "web_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)

    __table_args__ = (
        CheckConstraint("length(id_sha256) = 64", name="digest_length"),
        CheckConstraint("expires_at > created_at", name="expires_after_created"),
    )


class PasswordResetToken(Base):
    """A single-use reset link, valid for a short while. Only the SHA-256 is kept."""

    __tablename__ = "password_reset_tokens"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)

    __table_args__ = (
        CheckConstraint("length(id_sha256) = 64", name="digest_length"),
        CheckConstraint("expires_at > created_at", name="expires_after_created"),
    )


class LoginThrottle(Base):
    """Failed log-ins per key (an e-mail address's or a client address's SHA-256) in
    the current window; past the limit the key is locked until `locked_until`."""

    __tablename__ = "login_throttles"

    key_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)

    __table_args__ = (CheckConstraint("failures >= 0", name="failures_not_negative"),)


class AccountRole(Base):
    """Who may open the consoles: `issuer`, or `channel` for one channel."""

    __tablename__ = "account_roles"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    # The channel's id for role `channel` (no foreign key: channels live in another
    # migration branch); empty for `issuer`.
    scope: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("account_id", "role", "scope"),
        CheckConstraint("role IN ('issuer', 'channel')", name="role_known"),
        CheckConstraint("role = 'channel' OR scope = ''", name="issuer_unscoped"),
        CheckConstraint("role = 'issuer' OR length(scope) > 0", name="channel_scoped"),
    )
