"""The public status: the line now, availability over 24 hours, recent incidents."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from emeterai.admission.store import Sample, Snapshot

__all__ = ["Incident", "build_status", "incidents_from"]

DAY_MS = 24 * 3600 * 1000
MINUTE_MS = 60_000
ERROR_SHARE_MAX = 0.01
LONG_WAIT_S = 900.0
INCIDENTS_MAX = 10


@dataclass(frozen=True)
class Minute:
    minute_ms: int
    requests: int
    errors_5xx: int
    rejected_429: int
    queue_max: int
    wait_s_max: float


@dataclass(frozen=True)
class Incident:
    kind: str  # "errors" or "long_wait"
    started_ms: int
    ended_ms: int  # end of the last bad minute
    ongoing: bool
    requests: int
    errors_5xx: int
    wait_s_max: float

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "started_at": _iso(self.started_ms),
            "ended_at": None if self.ongoing else _iso(self.ended_ms),
            "ongoing": self.ongoing,
            "minutes": (self.ended_ms - self.started_ms) // MINUTE_MS,
            "requests": self.requests,
            "errors_5xx": self.errors_5xx,
            "wait_s_max": round(self.wait_s_max, 1),
        }


def _iso(unix_ms: int) -> str:
    return datetime.fromtimestamp(unix_ms / 1000, UTC).isoformat()


def minutes_of(samples: list[Sample]) -> list[Minute]:
    """The processes' rows summed (counts) or maxed (queue, wait) per minute."""
    merged: dict[int, Minute] = {}
    for sample in samples:
        seen = merged.get(sample.minute_ms)
        if seen is None:
            merged[sample.minute_ms] = Minute(
                sample.minute_ms,
                sample.requests,
                sample.errors_5xx,
                sample.rejected_429,
                sample.queue_max,
                sample.wait_s_max,
            )
        else:
            merged[sample.minute_ms] = Minute(
                seen.minute_ms,
                seen.requests + sample.requests,
                seen.errors_5xx + sample.errors_5xx,
                seen.rejected_429 + sample.rejected_429,
                max(seen.queue_max, sample.queue_max),
                max(seen.wait_s_max, sample.wait_s_max),
            )
    return [merged[key] for key in sorted(merged)]


def _kind(minute: Minute) -> str | None:
    if minute.requests and minute.errors_5xx / minute.requests > ERROR_SHARE_MAX:
        return "errors"
    if minute.wait_s_max > LONG_WAIT_S:
        return "long_wait"
    return None


def incidents_from(minutes: list[Minute], *, now_ms: int) -> list[Incident]:
    """Runs of consecutive bad minutes of one kind, newest first."""
    found: list[Incident] = []
    current: Incident | None = None
    for minute in minutes:
        kind = _kind(minute)
        joins = (
            current is not None
            and kind == current.kind
            and minute.minute_ms <= current.ended_ms + MINUTE_MS
        )
        if kind is None:
            if current is not None:
                found.append(current)
                current = None
            continue
        if current is not None and joins:
            current = Incident(
                kind,
                current.started_ms,
                minute.minute_ms + MINUTE_MS,
                False,
                current.requests + minute.requests,
                current.errors_5xx + minute.errors_5xx,
                max(current.wait_s_max, minute.wait_s_max),
            )
        else:
            if current is not None:
                found.append(current)
            current = Incident(
                kind,
                minute.minute_ms,
                minute.minute_ms + MINUTE_MS,
                False,
                minute.requests,
                minute.errors_5xx,
                minute.wait_s_max,
            )
    if current is not None:
        ongoing = current.ended_ms >= now_ms - MINUTE_MS
        found.append(
            Incident(
                current.kind,
                current.started_ms,
                current.ended_ms,
                ongoing,
                current.requests,
                current.errors_5xx,
                current.wait_s_max,
            )
        )
    return list(reversed(found))[:INCIDENTS_MAX]


def build_status(
    snapshot: Snapshot,
    samples: list[Sample],
    *,
    now_ms: int,
    rate_per_s: float,
    eta_s: float,
    admission_enabled: bool,
) -> dict[str, object]:
    day = [s for s in samples if s.minute_ms >= now_ms - DAY_MS]
    minutes = minutes_of(day)
    requests = sum(m.requests for m in minutes)
    errors = sum(m.errors_5xx for m in minutes)
    return {
        "admission_enabled": admission_enabled,
        "queue_length": snapshot.queue_length,
        "queue_by_lane": {
            "progress": snapshot.waiting(0),
            "paid": snapshot.waiting(1),
            "new": snapshot.waiting(2),
        },
        "admission_rate_per_s": round(rate_per_s, 3),
        "eta_s": round(eta_s, 1),
        "availability_24h": None if requests == 0 else round(1 - errors / requests, 6),
        "requests_24h": requests,
        "errors_5xx_24h": errors,
        "minutes_observed_24h": len(minutes),
        "incidents": [incident.as_dict() for incident in incidents_from(minutes, now_ms=now_ms)],
        "generated_at": _iso(now_ms),
    }
