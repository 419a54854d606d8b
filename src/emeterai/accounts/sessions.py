"""Server-side web sessions. The cookie carries a random secret; the database keeps only
its SHA-256, an owner and an absolute expiry."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from emeterai.accounts.web_models import WebSession

__all__ = ["end_all_sessions", "end_session", "open_session", "session_account"]

SESSION_SECRET_LENGTH_MAX = 100
PURGE_BATCH = 100


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def open_session(session: Session, account_id: int, *, now: datetime, ttl_s: int) -> str:
    """A new session for the account; returns the cookie's secret (shown once)."""
    if ttl_s < 1:
        raise ValueError("a session lives at least one second")
    # Sessions that ended long ago are only clutter; a few go with every log-in.
    stale = (
        session.query(WebSession.id_sha256)
        .filter(WebSession.expires_at < now - timedelta(days=1))
        .limit(PURGE_BATCH)
        .subquery()
    )
    session.execute(delete(WebSession).where(WebSession.id_sha256.in_(stale.select())))
    secret = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            id_sha256=_digest(secret),
            account_id=account_id,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
        )
    )
    session.flush()
    return secret


def session_account(session: Session, secret: str, *, now: datetime) -> int | None:
    """The account a live session belongs to, or None."""
    if not 1 <= len(secret) <= SESSION_SECRET_LENGTH_MAX:
        return None
    row = session.get(WebSession, _digest(secret))
    if row is None or row.ended_at is not None or row.expires_at <= now:
        return None
    return row.account_id


def end_session(session: Session, secret: str, *, now: datetime) -> None:
    if not 1 <= len(secret) <= SESSION_SECRET_LENGTH_MAX:
        return
    session.execute(
        update(WebSession)
        .where(WebSession.id_sha256 == _digest(secret), WebSession.ended_at.is_(None))
        .values(ended_at=now)
    )


def end_all_sessions(session: Session, account_id: int, *, now: datetime) -> None:
    session.execute(
        update(WebSession)
        .where(WebSession.account_id == account_id, WebSession.ended_at.is_(None))
        .values(ended_at=now)
    )
