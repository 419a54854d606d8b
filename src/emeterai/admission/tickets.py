"""Tickets: a place in the line, signed with HMAC-SHA256 under a rotating key.

`q1.<payload>.<mac>`, base64url. The payload packs the version, the lane, the arrival
sequence number, the issue and admission times (ms), the key epoch and a 16-byte binding
(a keyed hash of the bearer token or session cookie it was issued to). Any process with
the master secret checks a ticket without a database read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import struct
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from emeterai.errors import TicketInvalid

__all__ = [
    "LANES",
    "LANE_NEW",
    "LANE_PAID",
    "LANE_PROGRESS",
    "Ticket",
    "TicketKeys",
    "load_master_secret",
]

LANE_PROGRESS = 0
LANE_PAID = 1
LANE_NEW = 2
LANES = ("progress", "paid", "new")

VERSION = 1
PREFIX = "q1"
_PAYLOAD = struct.Struct(">BBQQQI16s")
MAC_BYTES = 16
BINDING_BYTES = 16
TICKET_LENGTH_MAX = 200
SECRET_BYTES = 32


@dataclass(frozen=True)
class Ticket:
    lane: int
    seq: int
    issued_ms: int
    admitted_ms: int  # 0 while waiting; set once the frontier passed it (a pass)
    epoch: int
    binding: bytes

    @property
    def is_pass(self) -> bool:
        return self.admitted_ms > 0

    @property
    def lane_name(self) -> str:
        return LANES[self.lane]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TicketKeys:
    """Derives the epoch keys and bindings from one master secret."""

    def __init__(self, master: bytes, *, rotation_s: int, ticket_ttl_s: int) -> None:
        if len(master) < 16:
            raise ValueError("the admission secret must have at least 16 bytes")
        self._master = master
        self.rotation_s = rotation_s
        self.ticket_ttl_s = ticket_ttl_s
        self._key = lru_cache(maxsize=8)(self._derive)

    def _derive(self, epoch: int) -> bytes:
        return hmac.new(self._master, b"ticket-key|" + epoch.to_bytes(8, "big"), "sha256").digest()

    def epoch_at(self, now_ms: int) -> int:
        return now_ms // 1000 // self.rotation_s

    def binding(self, kind: str, value: str) -> bytes:
        message = f"binding|{kind}|{value}".encode("utf-8", "replace")
        return hmac.new(self._master, message, "sha256").digest()[:BINDING_BYTES]

    def issue(self, *, lane: int, seq: int, binding: bytes, now_ms: int) -> Ticket:
        if lane not in (LANE_PROGRESS, LANE_PAID, LANE_NEW) or seq < 1:
            raise ValueError("a ticket needs a known lane and a positive sequence number")
        return Ticket(
            lane=lane,
            seq=seq,
            issued_ms=now_ms,
            admitted_ms=0,
            epoch=self.epoch_at(now_ms),
            binding=binding,
        )

    def admit(self, ticket: Ticket, *, now_ms: int) -> Ticket:
        """The same place, turned into a pass, re-signed under the current key."""
        return replace(ticket, admitted_ms=now_ms, epoch=self.epoch_at(now_ms))

    def encode(self, ticket: Ticket) -> str:
        payload = _PAYLOAD.pack(
            VERSION,
            ticket.lane,
            ticket.seq,
            ticket.issued_ms,
            ticket.admitted_ms,
            ticket.epoch,
            ticket.binding,
        )
        mac = hmac.new(self._key(ticket.epoch), payload, "sha256").digest()[:MAC_BYTES]
        return f"{PREFIX}.{_b64(payload)}.{_b64(mac)}"

    def decode(self, text: str, *, now_ms: int) -> Ticket:
        """Check the MAC, the epoch and the age; raise TicketInvalid otherwise."""
        if len(text) > TICKET_LENGTH_MAX:
            raise TicketInvalid("the ticket is too long")
        parts = text.strip().split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            raise TicketInvalid("the ticket is malformed")
        try:
            payload, mac = _unb64(parts[1]), _unb64(parts[2])
        except ValueError as error:
            raise TicketInvalid("the ticket is malformed") from error
        if len(payload) != _PAYLOAD.size or len(mac) != MAC_BYTES:
            raise TicketInvalid("the ticket is malformed")
        version, lane, seq, issued_ms, admitted_ms, epoch, binding = _PAYLOAD.unpack(payload)
        current = self.epoch_at(now_ms)
        if epoch not in (current, current - 1):
            raise TicketInvalid("the ticket was signed with a retired key")
        expected = hmac.new(self._key(epoch), payload, "sha256").digest()[:MAC_BYTES]
        if not hmac.compare_digest(mac, expected):
            raise TicketInvalid("the ticket's signature does not match")
        if version != VERSION or lane > LANE_NEW or seq < 1:
            raise TicketInvalid("the ticket is not one of ours")
        if issued_ms > now_ms + 60_000 or now_ms - issued_ms > self.ticket_ttl_s * 1000:
            raise TicketInvalid("the ticket has expired")
        return Ticket(
            lane=lane,
            seq=seq,
            issued_ms=issued_ms,
            admitted_ms=admitted_ms,
            epoch=epoch,
            binding=binding,
        )


def load_master_secret(configured: str | None, data_dir: Path) -> bytes:
    """The configured secret, or DATA_DIR/admission-secret, created once by whoever is first.

    Created under a temporary name and hard-linked into place, so that a concurrent
    reader never sees a half-written file and exactly one creator wins."""
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    path = data_dir / "admission-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        temporary = data_dir / f".admission-secret.{secrets.token_hex(6)}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(SECRET_BYTES))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    secret = path.read_bytes()
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"{path} must hold {SECRET_BYTES} bytes")
    return secret
