"""The completion webhook: one HMAC-signed POST when a batch finishes, retried with backoff.

Signature header, as Stripe-style receivers expect it:

    X-Emeterai-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

The secret (`whsec_...`) is shown to the submitter once, with the job id. A receiver
checks the HMAC in constant time and refuses a timestamp older than a few minutes
(`verify_signature` does both), so a captured delivery cannot be replayed later.

Delivery happens after the commit that finished the job and outside any transaction:
claim (lease the delivery by moving its next time forward), POST, record the outcome.
At least once: a receiver must treat `job_id` + `state` as idempotent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from emeterai.clock import Clock
from emeterai.db import transaction
from emeterai.jobs.config import JobSettings
from emeterai.jobs.models import Job

log = logging.getLogger("emeterai.jobs")

SIGNATURE_HEADER = "X-Emeterai-Signature"
TOLERANCE_S = 300
DELIVERIES_PER_ROUND_MAX = 20


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, *, now_unix: int, tolerance_s: int = TOLERANCE_S
) -> bool:
    """For receivers (and our tests): the HMAC matches and the timestamp is fresh."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError):
        return False
    if abs(now_unix - timestamp) > tolerance_s:
        return False
    expected = signature_header(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


@dataclass(frozen=True)
class Delivery:
    job_id: int
    url: str
    secret: str
    body: bytes


def payload(job: Job) -> bytes:
    return json.dumps(
        {
            "type": "job.finished",
            "job_id": job.id,
            "state": job.state,
            "item_count": job.item_count,
            "stamped": job.stamped_count,
            "failed": job.failed_count,
            "dead": job.dead_count,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        },
        sort_keys=True,
    ).encode()


def claim_delivery(session: Session, *, now: datetime, limits: JobSettings) -> Delivery | None:
    job = session.scalars(
        select(Job)
        .where(Job.webhook_state == "pending", Job.webhook_next_at <= now)
        .order_by(Job.webhook_next_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if job is None or job.webhook_url is None or job.webhook_secret is None:
        return None
    # The lease: nobody else picks this delivery up while we try it.
    job.webhook_next_at = now + timedelta(seconds=limits.webhook_timeout_s * 3)
    job.webhook_attempts += 1
    return Delivery(job.id, job.webhook_url, job.webhook_secret, payload(job))


def record_delivery(
    session: Session, job_id: int, *, delivered: bool, now: datetime, limits: JobSettings
) -> str:
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.webhook_state != "pending":
        return "gone"
    if delivered:
        job.webhook_state = "delivered"
        job.webhook_next_at = None
    elif job.webhook_attempts >= limits.webhook_attempts_max:
        job.webhook_state = "failed"
        job.webhook_next_at = None
    else:
        delay = min(limits.backoff_max_s * 10, 5.0 * 2 ** (job.webhook_attempts - 1))
        job.webhook_next_at = now + timedelta(seconds=delay)
    assert_state = job.webhook_state or "pending"
    return assert_state


def post(delivery: Delivery, *, now: datetime, timeout_s: float) -> bool:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "emeterai-webhook/1",
        SIGNATURE_HEADER: signature_header(delivery.secret, delivery.body, int(now.timestamp())),
    }
    try:
        response = httpx.post(
            delivery.url, content=delivery.body, headers=headers, timeout=timeout_s
        )
    except httpx.HTTPError as error:
        log.info("webhook for job %s failed: %s", delivery.job_id, type(error).__name__)
        return False
    return 200 <= response.status_code < 300


def deliver_due_webhooks(
    sessions: sessionmaker[Session], *, clock: Clock, limits: JobSettings
) -> int:
    delivered = 0
    for _ in range(DELIVERIES_PER_ROUND_MAX):
        with transaction(sessions) as session:
            delivery = claim_delivery(session, now=clock.now(), limits=limits)
        if delivery is None:
            break
        ok = post(delivery, now=clock.now(), timeout_s=limits.webhook_timeout_s)
        with transaction(sessions) as session:
            record_delivery(session, delivery.job_id, delivered=ok, now=clock.now(), limits=limits)
        delivered += ok
    return delivered
