"""The worker: claim one document under a lease, stamp it, record the outcome.

Per document, three short transactions and no transaction across the signing:
1. **claim** (`claim_next`): pick the oldest claimable document, `FOR UPDATE SKIP LOCKED`
   on PostgreSQL so workers never wait for each other (SQLite: one writer at a time, every
   transaction is BEGIN IMMEDIATE); lease it to this worker; make sure its reservation is
   live (`ensure_reservation`).
2. sign outside any transaction, with the document's own serial.
3. **complete** (`complete_claim`): only while this worker still holds the lease, post
   the reservation, use the serial, insert the stamp (stamping's `complete_stamp`), and
   mark the document stamped: one commit. Or **record the failure** (`fail_claim`):
   refused documents are voided at once; retryable errors go back to the queue with
   exponential backoff, and past `attempts_max` to the dead letters (voided).

A worker that dies leaves its documents `running` with a lease that stops being renewed;
once it runs out any worker claims them again and finishes the same reservation. A lease
that ran out `attempts_max` times dead-letters the document (a document that kills its
worker must not kill them all).
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from emeterai.config import Settings
from emeterai.db import transaction
from emeterai.errors import (
    EmeteraiError,
    JobLeaseLost,
    QuotaExhausted,
    RequestInProgress,
    ReservationExpired,
    SigningFailed,
    TransferConflict,
)
from emeterai.faults import fault_point
from emeterai.jobs.config import JobSettings
from emeterai.jobs.models import Job, JobItem
from emeterai.jobs.service import reserve_item
from emeterai.ledger.models import Transfer
from emeterai.runtime import Runtime
from emeterai.serials import Serial
from emeterai.stamping.service import (
    Reservation,
    StampRequest,
    abandon_stamp,
    complete_stamp,
    placement_for,
    release_expired,
    validate_document,
)
from emeterai.stamping.signing import Signer, SignJob

log = logging.getLogger("emeterai.jobs")

CLAIM_SCAN_MAX = 50  # documents settled inside one claim before it gives the lock back
ERROR_TEXT_MAX = 500
# Errors about the reservation itself: the next attempt makes a fresh one.
RETRYABLE_CODES = frozenset(
    {
        TransferConflict.code,
        ReservationExpired.code,
        RequestInProgress.code,
        SigningFailed.code,
    }
)


@dataclass(frozen=True)
class Claim:
    item_id: int
    job_id: int
    account_id: int
    position: int
    attempts: int
    serial: str
    transfer_id: int
    source_blob_key: str | None
    page: int
    x_pt: float | None
    y_pt: float | None

    @property
    def reservation(self) -> Reservation:
        return Reservation(serial=self.serial, transfer_id=self.transfer_id)


def new_worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


def backoff_s(attempts: int, limits: JobSettings) -> float:
    """Exponential, capped, with jitter so a crowd of retries does not return at once."""
    full = min(limits.backoff_max_s, limits.backoff_base_s * 2.0 ** max(0, attempts - 1))
    return full / 2 + random.uniform(0, full / 2)  # noqa: S311 (jitter, not a secret)


def _count_outcome(session: Session, job_id: int, outcome: str, now: datetime) -> None:
    """Count a finished document on its job; the last one finishes the job.

    The job row is locked last (after the document, the ledger accounts and the serial),
    the same order in every path, so two workers never deadlock on it.
    """
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise JobLeaseLost(f"job {job_id} vanished")
    if outcome == "stamped":
        job.stamped_count += 1
    elif outcome == "failed":
        job.failed_count += 1
    else:
        job.dead_count += 1
    if job.stamped_count + job.failed_count + job.dead_count == job.item_count:
        job.state = "dead" if job.dead_count else "completed"
        job.finished_at = now
        if job.webhook_url is not None:
            job.webhook_state = "pending"
            job.webhook_attempts = 0
            job.webhook_next_at = now
    elif job.state == "queued":
        job.state = "running"


def _finish(
    session: Session, item: JobItem, outcome: str, now: datetime, code: str | None = None
) -> None:
    item.state = outcome
    item.error_code = code
    item.finished_at = now
    item.locked_by = None
    item.locked_until = None
    _count_outcome(session, item.job_id, outcome, now)


def _reservation_of(session: Session, item: JobItem) -> tuple[Serial, Transfer] | None:
    serial = session.get(Serial, item.serial) if item.serial else None
    if serial is None:
        return None
    pending = session.get(Transfer, serial.reservation_transfer_id)
    if pending is None:
        return None
    return serial, pending


def ensure_reservation(
    session: Session, job: Job, item: JobItem, *, now: datetime, limits: JobSettings
) -> Reservation:
    """The document's live reservation; a fresh one if it was voided or is about to expire.

    The ledger cannot extend a pending transfer, so "renewing" is: void the old one (its
    quota comes back) and reserve again, in this one transaction. The unique live
    idempotency key of the serial guarantees the document never holds two.
    Raises QuotaExhausted if the account no longer holds the quota.
    """
    found = _reservation_of(session, item)
    if found is not None:
        serial, pending = found
        if serial.state == "reserved":
            margin = timedelta(seconds=max(limits.lease_s * 4, 300))
            if pending.expires_at is not None and pending.expires_at > now + margin:
                return Reservation(serial=serial.serial, transfer_id=pending.id)
            abandon_stamp(session, Reservation(serial.serial, pending.id), now=now)
        elif serial.state != "voided":
            raise TransferConflict(f"serial {serial.serial} is already {serial.state}")
    return reserve_item(session, job, item, now=now, ttl_s=limits.reservation_ttl_s)


def _claimable(now: datetime) -> object:
    return or_(
        and_(JobItem.state == "queued", JobItem.run_after <= now),
        and_(JobItem.state == "running", JobItem.locked_until < now),
    )


def claim_next(
    session: Session, *, worker_id: str, now: datetime, limits: JobSettings
) -> Claim | None:
    """Lease the oldest claimable document to this worker, its reservation made live."""
    for _ in range(CLAIM_SCAN_MAX):
        item = session.scalars(
            select(JobItem)
            .where(_claimable(now))  # type: ignore[arg-type]
            .order_by(JobItem.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        ).first()
        if item is None:
            return None
        job = session.get(Job, item.job_id)
        if job is None:
            raise JobLeaseLost(f"job {item.job_id} vanished")
        if item.state == "running":
            log.warning(
                "reclaiming job %s document %s: the lease of %s ran out",
                job.id,
                item.position,
                item.locked_by,
            )
            item.last_error = f"WORKER_LOST: the lease of worker {item.locked_by} ran out"[
                :ERROR_TEXT_MAX
            ]
        if item.attempts >= limits.attempts_max:
            _give_up(session, item, "dead", item.last_error or "", now)
            continue
        try:
            reservation = ensure_reservation(session, job, item, now=now, limits=limits)
        except QuotaExhausted as error:
            item.last_error = error.detail[:ERROR_TEXT_MAX]
            _finish(session, item, "failed", now, error.code)
            continue
        item.state = "running"
        item.attempts += 1
        item.locked_by = worker_id
        item.locked_until = now + timedelta(seconds=limits.lease_s)
        item.heartbeat_at = now
        item.started_at = item.started_at or now
        if job.state == "queued":
            session.execute(
                update(Job).where(Job.id == job.id, Job.state == "queued").values(state="running")
            )
        session.flush()
        return Claim(
            item_id=item.id,
            job_id=job.id,
            account_id=job.account_id,
            position=item.position,
            attempts=item.attempts,
            serial=reservation.serial,
            transfer_id=reservation.transfer_id,
            source_blob_key=item.source_blob_key,
            page=item.page,
            x_pt=item.x_pt,
            y_pt=item.y_pt,
        )
    return None


def _give_up(session: Session, item: JobItem, outcome: str, detail: str, now: datetime) -> None:
    """Void the document's reservation and finish it as failed or dead."""
    found = _reservation_of(session, item)
    if found is not None and found[0].state == "reserved":
        abandon_stamp(session, Reservation(found[0].serial, found[1].id), now=now)
    code = detail.split(":", 1)[0] if detail and detail.split(":", 1)[0].isupper() else None
    item.last_error = detail[:ERROR_TEXT_MAX] or None
    _finish(session, item, outcome, now, (code or "ATTEMPTS_EXHAUSTED")[:40])


def _held_item(session: Session, claim: Claim, worker_id: str) -> JobItem:
    item = session.get(JobItem, claim.item_id, with_for_update=True, populate_existing=True)
    if (
        item is None
        or item.state != "running"
        or item.locked_by != worker_id
        or item.serial != claim.serial
    ):
        raise JobLeaseLost(f"job {claim.job_id} document {claim.position} was taken over")
    return item


def complete_claim(
    session: Session,
    claim: Claim,
    request: StampRequest,
    *,
    worker_id: str,
    document: bytes,
    blob_key: str,
    signed_at: datetime,
    now: datetime,
) -> None:
    """Post, use the serial, record the stamp and the document as stamped: one commit."""
    item = _held_item(session, claim, worker_id)
    complete_stamp(
        session,
        claim.reservation,
        request,
        document=document,
        blob_key=blob_key,
        signed_at=signed_at,
        now=now,
    )
    item.last_error = None
    _finish(session, item, "stamped", now)


def is_refusal(error: BaseException) -> bool:
    """A refusal of the document itself: retrying cannot help."""
    return (
        isinstance(error, EmeteraiError)
        and error.status < 500
        and error.code not in RETRYABLE_CODES
    )


def fail_claim(
    session: Session,
    claim: Claim,
    error: BaseException,
    *,
    worker_id: str,
    now: datetime,
    limits: JobSettings,
) -> str:
    """Record a failed attempt: refused, retried later, or dead. Returns the new state."""
    item = _held_item(session, claim, worker_id)
    code = error.code if isinstance(error, EmeteraiError) else "SIGNING_FAILED"
    detail = error.detail if isinstance(error, EmeteraiError) else type(error).__name__
    text = f"{code}: {detail}"[:ERROR_TEXT_MAX]
    if is_refusal(error):
        abandon_stamp(session, claim.reservation, now=now)
        item.last_error = text
        _finish(session, item, "failed", now, code)
        return "failed"
    if item.attempts >= limits.attempts_max:
        _give_up(session, item, "dead", text, now)
        return "dead"
    item.state = "queued"
    item.locked_by = None
    item.locked_until = None
    item.last_error = text
    item.run_after = now + timedelta(seconds=backoff_s(item.attempts, limits))
    return "queued"


def renew_leases(session: Session, *, worker_id: str, now: datetime, lease_s: float) -> int:
    """The heartbeat: extend the leases of every document this worker holds."""
    result = session.execute(
        update(JobItem)
        .where(JobItem.locked_by == worker_id, JobItem.state == "running")
        .values(locked_until=now + timedelta(seconds=lease_s), heartbeat_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


@dataclass
class Worker:
    """One worker: claims documents one at a time until told to stop."""

    runtime: Runtime
    signer: Signer
    limits: JobSettings
    worker_id: str = field(default_factory=new_worker_id)
    stop: threading.Event = field(default_factory=threading.Event)
    stamped: int = 0

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def run_once(self) -> bool:
        """Claim and process one document. False when there was nothing to do."""
        runtime = self.runtime
        with transaction(runtime.sessions) as session:
            claim = claim_next(
                session, worker_id=self.worker_id, now=runtime.clock.now(), limits=self.limits
            )
        if claim is None:
            return False
        self.process(claim)
        return True

    def process(self, claim: Claim) -> str:
        runtime, settings = self.runtime, self.settings
        try:
            source = runtime.blobs.get(claim.source_blob_key) if claim.source_blob_key else None
            if source is None:
                raise SigningFailed("the source document is missing from the blob store")
            placement = placement_for(
                source, page=claim.page, x_pt=claim.x_pt, y_pt=claim.y_pt, settings=settings
            )
            request = StampRequest(
                account_id=claim.account_id,
                document=source,
                placement=placement,
                idempotency_key=None,
            )
            validate_document(request, settings)
            signed_at = runtime.clock.now()
            document = self.signer(
                SignJob(
                    document=source,
                    serial=claim.serial,
                    verify_url=settings.verify_url(claim.serial),
                    placement=placement,
                    signed_at=signed_at,
                )
            )
            fault_point(settings.fault_points, "job.after_sign")
            blob_key = runtime.blobs.put(document)
            with transaction(runtime.sessions) as session:
                complete_claim(
                    session,
                    claim,
                    request,
                    worker_id=self.worker_id,
                    document=document,
                    blob_key=blob_key,
                    signed_at=signed_at,
                    now=runtime.clock.now(),
                )
            fault_point(settings.fault_points, "job.after_complete")
            self.stamped += 1
            return "stamped"
        except JobLeaseLost:
            log.warning("job %s document %s: lease lost", claim.job_id, claim.position)
            return "lost"
        except BaseException as error:
            try:
                with transaction(runtime.sessions) as session:
                    state = fail_claim(
                        session,
                        claim,
                        error,
                        worker_id=self.worker_id,
                        now=runtime.clock.now(),
                        limits=self.limits,
                    )
            except JobLeaseLost:
                state = "lost"
            log.info(
                "job %s document %s: %s (%s)",
                claim.job_id,
                claim.position,
                state,
                getattr(error, "code", type(error).__name__),
            )
            if not isinstance(error, Exception):
                raise
            return state

    def run_until_idle(self, *, limit: int = 100_000) -> int:
        """Process documents until none is claimable now (tests, one-shot runs)."""
        done = 0
        while done < limit and not self.stop.is_set() and self.run_once():
            done += 1
        return done

    def heartbeat(self) -> int:
        with transaction(self.runtime.sessions) as session:
            return renew_leases(
                session,
                worker_id=self.worker_id,
                now=self.runtime.clock.now(),
                lease_s=self.limits.lease_s,
            )

    def _heartbeat_forever(self, finished: threading.Event) -> None:
        while not finished.wait(self.limits.heartbeat_s):
            try:
                self.heartbeat()
            except Exception:
                log.exception("heartbeat failed; retrying")

    def sweep(self) -> None:
        """Periodic chores any worker may do: expired reservations, webhooks."""
        from emeterai.jobs.webhooks import deliver_due_webhooks

        with transaction(self.runtime.sessions) as session:
            release_expired(session, now=self.runtime.clock.now())
        deliver_due_webhooks(self.runtime.sessions, clock=self.runtime.clock, limits=self.limits)

    def purge(self) -> None:
        from emeterai.jobs.retention import purge_retention

        purge_retention(
            self.runtime.sessions,
            self.runtime.blobs,
            settings=self.settings,
            clock=self.runtime.clock,
        )

    def run_forever(self, *, parent_pid: int | None = None) -> None:
        """Until `stop` is set: the document in hand is always finished first."""
        finished = threading.Event()
        beat = threading.Thread(target=self._heartbeat_forever, args=(finished,), daemon=True)
        beat.start()
        next_sweep = 0.0
        next_purge = time.monotonic() + random.uniform(0, self.limits.retention_interval_s)  # noqa: S311
        log.info("worker %s ready", self.worker_id)
        try:
            while not self.stop.is_set():
                if parent_pid is not None and os.getppid() != parent_pid:
                    log.warning("worker %s: the supervisor is gone; stopping", self.worker_id)
                    break
                busy = False
                try:
                    busy = self.run_once()
                    if time.monotonic() >= next_sweep:
                        next_sweep = time.monotonic() + self.limits.sweep_interval_s
                        self.sweep()
                    if time.monotonic() >= next_purge:
                        next_purge = time.monotonic() + self.limits.retention_interval_s
                        self.purge()
                except Exception:
                    log.exception("worker %s: a round failed; backing off", self.worker_id)
                    busy = False
                if not busy:
                    self.stop.wait(self.limits.poll_s)
        finally:
            finished.set()
            beat.join(timeout=5)
            log.info("worker %s stopped after %s stamps", self.worker_id, self.stamped)
