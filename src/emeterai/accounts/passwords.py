"""Passwords for the website: register, log in (throttled), reset through an e-mailed link.

Use cases take a session and never commit. A failed log-in is recorded, not raised, so
that the caller can commit the failure count before it shows the refusal.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emeterai.accounts import create_account, normalise_email
from emeterai.accounts.models import Account
from emeterai.accounts.sessions import end_all_sessions
from emeterai.accounts.web_models import AccountPassword, LoginThrottle, PasswordResetToken
from emeterai.errors import (
    AccountExists,
    InvalidEmail,
    LoginThrottled,
    ResetTokenInvalid,
    WeakPassword,
)
from emeterai.hashing import PASSWORD_HASHER

__all__ = [
    "IssuedReset",
    "LoginAttempt",
    "attempt_login",
    "register_account",
    "request_password_reset",
    "reset_password",
    "set_password",
]

PASSWORD_LENGTH_MIN = 10
PASSWORD_LENGTH_MAX = 200
RESET_TTL = timedelta(hours=1)
RESETS_PER_HOUR_MAX = 3
RESET_TOKEN_LENGTH_MAX = 100
# Throttle: failures per key within the window; past the limit the key is locked.
THROTTLE_WINDOW = timedelta(minutes=15)
THROTTLE_LOCK = timedelta(minutes=15)
FAILURES_PER_EMAIL_MAX = 5
FAILURES_PER_CLIENT_MAX = 20

_HASHER = PASSWORD_HASHER
# Verified against when the address is unknown, so both answers take as long.
_DUMMY_HASH = _HASHER.hash("emeterai-no-such-account")


def check_password(password: str) -> str:
    if not PASSWORD_LENGTH_MIN <= len(password) <= PASSWORD_LENGTH_MAX:
        raise WeakPassword(
            f"the password must have {PASSWORD_LENGTH_MIN} to {PASSWORD_LENGTH_MAX} characters"
        )
    return password


def set_password(session: Session, account_id: int, password: str, *, now: datetime) -> None:
    hashed = _HASHER.hash(check_password(password))
    row = session.get(AccountPassword, account_id)
    if row is None:
        session.add(AccountPassword(account_id=account_id, password_hash=hashed, updated_at=now))
    else:
        row.password_hash = hashed
        row.updated_at = now
    session.flush()


def register_account(session: Session, email: str, password: str, *, now: datetime) -> Account:
    """A new account with a password. An address already known (for instance made by an
    operator) is refused: its owner sets a password through the reset link instead."""
    check_password(password)
    account = create_account(session, email, now=now)
    set_password(session, account.id, password, now=now)
    return account


@dataclass(frozen=True)
class LoginAttempt:
    account_id: int | None  # None: refused, and the failure was recorded

    @property
    def ok(self) -> bool:
        return self.account_id is not None


def _key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


def _throttle_row(session: Session, key: str, now: datetime) -> LoginThrottle:
    row = session.get(LoginThrottle, key, with_for_update=True)
    if row is None:
        row = LoginThrottle(key_sha256=key, failures=0, window_started_at=now, locked_until=None)
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:  # a concurrent first attempt inserted it: use that row
            row = session.get(LoginThrottle, key, with_for_update=True, populate_existing=True)
            if row is None:
                raise
    if row.window_started_at + THROTTLE_WINDOW <= now and (
        row.locked_until is None or row.locked_until <= now
    ):
        row.failures = 0
        row.window_started_at = now
        row.locked_until = None
    return row


def _record_failure(row: LoginThrottle, limit: int, now: datetime) -> None:
    row.failures += 1
    if row.failures >= limit:
        row.locked_until = now + THROTTLE_LOCK


def attempt_login(
    session: Session, email: str, password: str, *, client: str, now: datetime
) -> LoginAttempt:
    """Check a password. Raises `LoginThrottled` while the address or the client is locked;
    otherwise records a failure (the caller commits it) or clears the address's count."""
    try:
        address = normalise_email(email)
    except InvalidEmail:
        address = email.strip().lower()[:254]
    by_email = _throttle_row(session, _key("email", address), now)
    by_client = _throttle_row(session, _key("client", client[:100]), now)
    for row in (by_email, by_client):
        if row.locked_until is not None and row.locked_until > now:
            seconds = int((row.locked_until - now).total_seconds()) + 1
            raise LoginThrottled(
                f"too many failed log-ins; try again in {seconds} s", retry_after_s=seconds
            )
    account = session.scalars(select(Account).where(Account.email == address)).first()
    stored = session.get(AccountPassword, account.id) if account is not None else None
    try:
        _HASHER.verify(stored.password_hash if stored else _DUMMY_HASH, password[:1000])
        verified = stored is not None
    except (VerificationError, InvalidHashError):
        verified = False
    if not verified or account is None:
        _record_failure(by_email, FAILURES_PER_EMAIL_MAX, now)
        _record_failure(by_client, FAILURES_PER_CLIENT_MAX, now)
        session.flush()
        return LoginAttempt(account_id=None)
    by_email.failures = 0
    by_email.locked_until = None
    if stored is not None and _HASHER.check_needs_rehash(stored.password_hash):
        stored.password_hash = _HASHER.hash(password)
    session.flush()
    return LoginAttempt(account_id=account.id)


@dataclass(frozen=True)
class IssuedReset:
    email: str
    token: str  # goes into the e-mailed link, never stored


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def request_password_reset(session: Session, email: str, *, now: datetime) -> IssuedReset | None:
    """A reset link for a known address; None for an unknown one or too many requests
    (the page says the same either way, so it reveals nothing about who has an account)."""
    try:
        address = normalise_email(email)
    except InvalidEmail:
        return None
    account = session.scalars(select(Account).where(Account.email == address)).first()
    if account is None:
        return None
    recent = session.scalar(
        select(func.count())
        .select_from(PasswordResetToken)
        .where(
            PasswordResetToken.account_id == account.id,
            PasswordResetToken.created_at > now - timedelta(hours=1),
        )
    )
    if (recent or 0) >= RESETS_PER_HOUR_MAX:
        return None
    token = secrets.token_urlsafe(32)
    session.add(
        PasswordResetToken(
            id_sha256=_digest(token),
            account_id=account.id,
            created_at=now,
            expires_at=now + RESET_TTL,
        )
    )
    session.flush()
    return IssuedReset(email=address, token=token)


def reset_password(session: Session, token: str, password: str, *, now: datetime) -> int:
    """Use a reset link once: set the password, end every session. Returns the account id."""
    check_password(password)
    if not 1 <= len(token) <= RESET_TOKEN_LENGTH_MAX:
        raise ResetTokenInvalid()
    row = session.get(PasswordResetToken, _digest(token), with_for_update=True)
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise ResetTokenInvalid()
    row.used_at = now
    set_password(session, row.account_id, password, now=now)
    end_all_sessions(session, row.account_id, now=now)
    return row.account_id


def ensure_unregistered(session: Session, email: str) -> None:
    address = normalise_email(email)
    if session.scalars(select(Account).where(Account.email == address)).first() is not None:
        raise AccountExists(f"an account for {address} already exists")
