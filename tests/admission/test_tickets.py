"""Tickets: signed, bound, not movable, rotating keys, bounded age."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from emeterai.admission.tickets import (
    LANE_NEW,
    LANE_PAID,
    TicketKeys,
    load_master_secret,
)
from emeterai.errors import TicketInvalid

NOW_MS = 1_800_000_000_000
SECRET = b"s" * 32


def keys(secret: bytes = SECRET) -> TicketKeys:
    return TicketKeys(secret, rotation_s=3600, ticket_ttl_s=7200)


def test_round_trip_and_admit() -> None:
    k = keys()
    binding = k.binding("session", "abc" * 8)
    ticket = k.issue(lane=LANE_NEW, seq=42, binding=binding, now_ms=NOW_MS)
    decoded = k.decode(k.encode(ticket), now_ms=NOW_MS + 1000)
    assert decoded == ticket
    assert not decoded.is_pass
    admitted = k.admit(decoded, now_ms=NOW_MS + 5000)
    again = k.decode(k.encode(admitted), now_ms=NOW_MS + 6000)
    assert again.is_pass and again.seq == 42 and again.lane == LANE_NEW


def test_moving_forward_or_changing_lane_breaks_the_signature() -> None:
    k = keys()
    ticket = k.issue(lane=LANE_NEW, seq=1000, binding=b"b" * 16, now_ms=NOW_MS)
    prefix, payload, mac = k.encode(ticket).split(".")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw[1] = LANE_PAID  # a better lane
    raw[9] = 1  # a smaller sequence number (low byte of seq)
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(TicketInvalid):
        k.decode(f"{prefix}.{forged}.{mac}", now_ms=NOW_MS)


@pytest.mark.parametrize("text", ["", "q1", "q1.x.y", "q2.AAAA.BBBB", "q1." + "A" * 300])
def test_garbage_is_refused(text: str) -> None:
    with pytest.raises(TicketInvalid):
        keys().decode(text, now_ms=NOW_MS)


def test_another_secret_cannot_forge() -> None:
    ours, theirs = keys(), keys(b"t" * 32)
    forged = theirs.encode(theirs.issue(lane=LANE_NEW, seq=1, binding=b"b" * 16, now_ms=NOW_MS))
    with pytest.raises(TicketInvalid):
        ours.decode(forged, now_ms=NOW_MS)


def test_keys_rotate_current_and_previous_only() -> None:
    k = keys()
    ticket = k.encode(k.issue(lane=LANE_NEW, seq=1, binding=b"b" * 16, now_ms=NOW_MS))
    k.decode(ticket, now_ms=NOW_MS + 3600 * 1000)  # the next epoch still accepts it
    long_keys = TicketKeys(SECRET, rotation_s=3600, ticket_ttl_s=7 * 86_400)
    with pytest.raises(TicketInvalid, match="retired key"):
        long_keys.decode(ticket, now_ms=NOW_MS + 3 * 3600 * 1000)


def test_expired_and_future_tickets_are_refused() -> None:
    k = TicketKeys(SECRET, rotation_s=86_400, ticket_ttl_s=600)
    ticket = k.encode(k.issue(lane=LANE_NEW, seq=1, binding=b"b" * 16, now_ms=NOW_MS))
    with pytest.raises(TicketInvalid, match="expired"):
        k.decode(ticket, now_ms=NOW_MS + 601_000)
    with pytest.raises(TicketInvalid, match="expired"):
        k.decode(ticket, now_ms=NOW_MS - 120_000)


def test_bindings_differ_by_credential_and_hide_it() -> None:
    k = keys()
    a, b = k.binding("token", "emt_a"), k.binding("token", "emt_b")
    assert a != b and len(a) == 16
    assert a != k.binding("session", "emt_a")
    assert b"emt_a" not in a


def test_master_secret_file_is_created_once_private(tmp_path: Path) -> None:
    first = load_master_secret(None, tmp_path)
    assert load_master_secret(None, tmp_path) == first
    assert os.stat(tmp_path / "admission-secret").st_mode & 0o777 == 0o600
    assert load_master_secret("configured", tmp_path) != first
    assert [p.name for p in tmp_path.iterdir()] == ["admission-secret"]
