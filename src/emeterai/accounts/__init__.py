"""Accounts: who may hold quota and stamp, and how they prove it (API tokens)."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emeterai.accounts.models import Account, ApiToken
from emeterai.errors import AccountExists, AccountNotFound, InvalidEmail, Unauthenticated
from emeterai.hashing import GENERATED_SECRET_HASHER

__all__ = [
    "Account",
    "ApiToken",
    "IssuedToken",
    "TokenVerifier",
    "account_by_email",
    "create_account",
    "issue_token",
    "normalise_email",
    "revoke_tokens",
]

EMAIL_BYTES_MAX = 254
_EMAIL = re.compile(
    r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$"
)
_TOKEN = re.compile(r"^emt_([a-z2-7]{16})_([A-Za-z0-9_-]{43})$")
_HASHER = GENERATED_SECRET_HASHER  # 256 random bits: see emeterai.hashing


def normalise_email(email: str) -> str:
    candidate = email.strip().lower()
    if len(candidate) > EMAIL_BYTES_MAX or not _EMAIL.match(candidate):
        raise InvalidEmail(f"{email[:60]!r} is not a valid e-mail address")
    return candidate


@dataclass(frozen=True)
class IssuedToken:
    account_id: int
    token: str  # shown once, never stored


def create_account(session: Session, email: str, *, now: datetime) -> Account:
    address = normalise_email(email)
    if session.scalars(select(Account).where(Account.email == address)).first() is not None:
        raise AccountExists(f"an account for {address} already exists")
    account = Account(email=address, created_at=now)
    try:
        with session.begin_nested():
            session.add(account)
    except IntegrityError as error:
        raise AccountExists(f"an account for {address} already exists") from error
    return account


def account_by_email(session: Session, email: str) -> Account:
    address = normalise_email(email)
    account = session.scalars(select(Account).where(Account.email == address)).first()
    if account is None:
        raise AccountNotFound(f"no account for {address}")
    return account


def revoke_tokens(session: Session, account: Account, *, now: datetime) -> int:
    """Revoke every live token of the account (a leaked token); returns how many."""
    rows = session.scalars(
        select(ApiToken)
        .where(ApiToken.account_id == account.id, ApiToken.revoked_at.is_(None))
        .with_for_update()
    ).all()
    for row in rows:
        row.revoked_at = now
    session.flush()
    return len(rows)


def issue_token(session: Session, account: Account, *, now: datetime) -> IssuedToken:
    token_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(16))
    secret = secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            id=token_id,
            account_id=account.id,
            secret_hash=_HASHER.hash(secret),
            created_at=now,
        )
    )
    session.flush()
    return IssuedToken(account_id=account.id, token=f"emt_{token_id}_{secret}")


class TokenVerifier:
    """Checks bearer tokens. Argon2 is slow by design, so a verified token is remembered
    for a short while, keyed by its SHA-256, in this process only."""

    def __init__(self, *, cache_ttl_s: float = 60.0, cache_entries_max: int = 10_000) -> None:
        self._ttl_s = cache_ttl_s
        self._entries_max = cache_entries_max
        self._cache: dict[str, float] = {}
        self._lock = threading.Lock()

    def account_id(self, session: Session, token: str) -> int:
        """The token's account. The row is read every time (a revocation takes effect at
        once); only the Argon2 check is skipped for a token verified a moment ago."""
        match = _TOKEN.match(token)
        if match is None:
            raise Unauthenticated("the API token is malformed")
        row = session.get(ApiToken, match.group(1))
        if row is None or row.revoked_at is not None:
            raise Unauthenticated("the API token is unknown or revoked")
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            verified_until = self._cache.get(digest, 0.0)
        if verified_until > time.monotonic():
            return row.account_id
        try:
            _HASHER.verify(row.secret_hash, match.group(2))
        except (VerificationError, InvalidHashError) as error:
            raise Unauthenticated("the API token is unknown or revoked") from error
        with self._lock:
            if len(self._cache) >= self._entries_max:
                self._cache.clear()
            self._cache[digest] = time.monotonic() + self._ttl_s
        return row.account_id
