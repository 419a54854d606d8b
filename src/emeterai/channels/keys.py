"""Channel credentials: API keys hashed with Argon2, webhook secrets encrypted with Fernet.

An API key is `emc_<id>_<secret>` (the accounts token pattern); only an Argon2 hash of the
secret is stored. The webhook secret must be usable for HMAC verification, so it cannot
be hashed: it is encrypted with a key derived from the issuer's key passphrase.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from emeterai.channels.models import ChannelApiKey, ChannelWebhookSecret
from emeterai.config import Settings
from emeterai.errors import KeyPassphraseMissing, KeyPassphraseWrong, Unauthenticated
from emeterai.hashing import GENERATED_SECRET_HASHER

API_KEY_BYTES_MAX = 200
_API_KEY = re.compile(r"^emc_([a-z2-7]{16})_([A-Za-z0-9_-]{43})$")
_HASHER = GENERATED_SECRET_HASHER  # 256 random bits: see emeterai.hashing
_KDF_SALT = b"emeterai channel webhook secrets v1"
_KDF_ITERATIONS = 200_000


def key_passphrase(settings: Settings) -> bytes:
    """From EMETERAI_KEY_PASSPHRASE, or the development file `emeterai init` wrote.

    The same rule as `stamping.signing.key_passphrase`, repeated here because importing
    that module loads pyHanko, which channel commands and routes never need."""
    if settings.key_passphrase is not None:
        return settings.key_passphrase.get_secret_value().encode()
    if settings.passphrase_file.exists():
        return settings.passphrase_file.read_text().strip().encode()
    raise KeyPassphraseMissing(
        f"set EMETERAI_KEY_PASSPHRASE (no development file at {settings.passphrase_file})"
    )


@functools.lru_cache(maxsize=4)
def _fernet(passphrase: bytes) -> Fernet:
    # PBKDF2 because a passphrase may be a human one; cached, so once per process.
    derived = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=32, salt=_KDF_SALT, iterations=_KDF_ITERATIONS
    ).derive(passphrase)
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt_secret(settings: Settings, secret: str) -> str:
    return _fernet(key_passphrase(settings)).encrypt(secret.encode()).decode()


def decrypt_secret(settings: Settings, token: str) -> str:
    try:
        return _fernet(key_passphrase(settings)).decrypt(token.encode()).decode()
    except InvalidToken as error:
        raise KeyPassphraseWrong("the key passphrase does not open the webhook secrets") from error


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    api_key: str  # shown once, never stored


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def issue_api_key(session: Session, channel_id: int, *, now: datetime) -> IssuedKey:
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(16))
    secret = secrets.token_urlsafe(32)
    session.add(
        ChannelApiKey(
            id=key_id, channel_id=channel_id, secret_hash=_HASHER.hash(secret), created_at=now
        )
    )
    session.flush()
    return IssuedKey(key_id=key_id, api_key=f"emc_{key_id}_{secret}")


def add_webhook_secret(
    session: Session, settings: Settings, channel_id: int, *, now: datetime
) -> str:
    secret = new_webhook_secret()
    session.add(
        ChannelWebhookSecret(
            channel_id=channel_id,
            secret_encrypted=encrypt_secret(settings, secret),
            created_at=now,
        )
    )
    session.flush()
    return secret


def live_webhook_secrets(
    session: Session, settings: Settings, channel_id: int, *, now: datetime
) -> list[str]:
    """The current secret and any older one still inside its overlap window."""
    rows = session.scalars(
        select(ChannelWebhookSecret)
        .where(
            ChannelWebhookSecret.channel_id == channel_id,
            or_(
                ChannelWebhookSecret.expires_at.is_(None),
                ChannelWebhookSecret.expires_at > now,
            ),
        )
        .order_by(ChannelWebhookSecret.id.desc())
        .limit(4)
    ).all()
    return [decrypt_secret(settings, row.secret_encrypted) for row in rows]


class ChannelKeyVerifier:
    """Checks channel API keys. Argon2 is slow by design, so a verified key is remembered
    for a short while (keyed by its SHA-256, with its own expiry) in this process only."""

    def __init__(self, *, cache_ttl_s: float = 60.0, cache_entries_max: int = 10_000) -> None:
        self._ttl_s = cache_ttl_s
        self._entries_max = cache_entries_max
        self._cache: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def channel_id(self, session: Session, api_key: str, *, now: datetime) -> int:
        digest = hashlib.sha256(api_key.encode("utf-8", "replace")).hexdigest()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        match = _API_KEY.match(api_key)
        if match is None:
            raise Unauthenticated("the channel API key is malformed")
        row = session.get(ChannelApiKey, match.group(1))
        if row is None or (row.expires_at is not None and row.expires_at <= now):
            raise Unauthenticated("the channel API key is unknown or expired")
        try:
            _HASHER.verify(row.secret_hash, match.group(2))
        except (VerificationError, InvalidHashError) as error:
            raise Unauthenticated("the channel API key is unknown or expired") from error
        ttl_s = self._ttl_s
        if row.expires_at is not None:
            ttl_s = min(ttl_s, max(0.0, (row.expires_at - now).total_seconds()))
        with self._lock:
            if len(self._cache) >= self._entries_max:
                self._cache.clear()
            self._cache[digest] = (row.channel_id, time.monotonic() + ttl_s)
        return row.channel_id
