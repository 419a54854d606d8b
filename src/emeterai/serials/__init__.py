"""Serial numbers: 22 characters of upper-case Crockford base32.

The first 20 characters carry 100 random bits. The last 2 carry a check code: a weighted
sum of the 20 symbol values modulo the prime 1021, with weights 2**i. Any single mistyped
character changes the sum by (d' - d) * 2**i, which is never 0 modulo 1021, and any swap
of two neighbours changes it by (d_i - d_j) * 2**i, also never 0: both are always caught
before a lookup.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy.orm import Session

from emeterai.errors import InvalidReason, InvalidSerial, SerialNotFound, SerialNotRevocable
from emeterai.serials.models import SERIAL_STATES, Serial

__all__ = [
    "SERIAL_LENGTH",
    "SERIAL_STATES",
    "Serial",
    "check_code",
    "generate_serial",
    "is_well_formed",
    "normalise_serial",
    "revoke_serial",
]

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
SERIAL_LENGTH = 22
PAYLOAD_LENGTH = 20
_MODULUS = 1021
_VALUE = {symbol: index for index, symbol in enumerate(ALPHABET)}
# Crockford: O reads as 0, I and L as 1; hyphens and spaces are only for reading.
_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1", "-": None, " ": None})


def check_code(payload: str) -> str:
    total = sum(_VALUE[symbol] * pow(2, index, _MODULUS) for index, symbol in enumerate(payload))
    code = total % _MODULUS
    return ALPHABET[code // 32] + ALPHABET[code % 32]


def generate_serial() -> str:
    payload = "".join(secrets.choice(ALPHABET) for _ in range(PAYLOAD_LENGTH))
    return payload + check_code(payload)


def is_well_formed(serial: str) -> bool:
    if len(serial) != SERIAL_LENGTH or any(symbol not in _VALUE for symbol in serial):
        return False
    return check_code(serial[:PAYLOAD_LENGTH]) == serial[PAYLOAD_LENGTH:]


def normalise_serial(text: str) -> str:
    """Accept what a person types (lower case, O for 0, hyphens); refuse a wrong check code."""
    if len(text) > 64:
        raise InvalidSerial("a serial has 22 characters")
    candidate = text.strip().upper().translate(_ALIASES)
    if len(candidate) != SERIAL_LENGTH or any(symbol not in _VALUE for symbol in candidate):
        raise InvalidSerial(f"{text[:30]!r} is not 22 characters of 0-9 and A-Z")
    if check_code(candidate[:PAYLOAD_LENGTH]) != candidate[PAYLOAD_LENGTH:]:
        raise InvalidSerial(f"{candidate} fails its check code: a character is mistyped")
    return candidate


def revoke_serial(session: Session, serial: str, *, reason: str, now: datetime) -> Serial:
    """The issuer withdraws a used stamp. The charge stays: the duty was collected."""
    reason = reason.strip()
    if not 1 <= len(reason) <= 500:
        raise InvalidReason("a revocation needs a reason of 1 to 500 characters")
    row = session.get(Serial, normalise_serial(serial), with_for_update=True)
    if row is None:
        raise SerialNotFound(f"no e-Meterai has serial {serial}")
    if row.state == "revoked":
        return row
    if row.state != "used":
        raise SerialNotRevocable(f"serial {row.serial} is {row.state}, not used")
    row.state = "revoked"
    row.revoked_at = now
    row.revoked_reason = reason
    session.flush()
    return row
