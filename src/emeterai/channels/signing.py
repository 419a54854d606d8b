"""The webhook signature: `sha256=<hex HMAC-SHA256 of the secret over "<timestamp>.<body>">`.

Channels compute it over the raw body bytes they send, with the unix time in seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import re

SIGNATURE_PREFIX = "sha256="
_SIGNATURE = re.compile(r"^sha256=([0-9a-f]{64})$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


def signature_hex(secret: str, timestamp: int | str, body: bytes) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The X-Emeterai-Signature header value."""
    return SIGNATURE_PREFIX + signature_hex(secret, timestamp, body)


def parse_signature(header: str | None) -> str | None:
    """The lower-case hex digest, or None if the header is missing or malformed."""
    if header is None or len(header) > 100:
        return None
    match = _SIGNATURE.match(header.strip().lower())
    return match.group(1) if match else None


def parse_timestamp(header: str | None) -> int | None:
    if header is None or not _TIMESTAMP.match(header.strip()):
        return None
    return int(header.strip())


def matches(secrets: list[str], timestamp: int, body: bytes, digest_hex: str) -> bool:
    """Constant-time comparison against every live secret (all are tried, always)."""
    found = False
    for secret in secrets:
        expected = signature_hex(secret, timestamp, body)
        found |= hmac.compare_digest(expected, digest_hex)
    return found
