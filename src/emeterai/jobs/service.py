"""Bulk jobs: submit a batch, watch it, read its report, get its results, retry it.

**Quota.** Submitting a batch of N documents reserves N quota in the transaction that
inserts the job: one pending ledger transfer and one serial per document, made by the
same `reserve_stamp` a single stamp uses. One reservation per document (not one of N)
because the ledger settles a pending transfer whole: as each document finishes, its own
reservation is posted (stamped) or voided (refused, or given up), so a partly failed batch
is charged only for what was stamped, and the audit invariant "posted consumptions = used
serials = stamp records" holds row by row. Document reservations live for
`EMETERAI_JOBS_RESERVATION_TTL_S` (two days by default), not the five minutes of an
interactive stamp, since a batch may wait in a queue; a worker that picks up a document
whose reservation expired, or is about to, makes it a fresh one first (see
`worker.ensure_reservation`).

**Exactly once.** A document has one live reservation at a time (its serial carries the
idempotency key `job:<job id>:<position>`, unique among live serials). A worker posts it
and marks the document stamped in one transaction, and only while it still holds the
document's lease; a worker that lost its lease, or a crash before that commit, leaves the
same reservation for the next worker to finish. So a document is signed at most once per
attempt but recorded and charged exactly once.

The documents go to the blob store before the transaction (an unreferenced blob is only
a file); the job rows hold their keys.
"""

from __future__ import annotations

import csv
import hashlib
import io
import secrets
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from emeterai.blobs import BlobStore
from emeterai.clock import Clock
from emeterai.db import transaction
from emeterai.errors import (
    BatchEmpty,
    BatchTooLarge,
    IdempotencyConflict,
    InvalidWebhookUrl,
    JobNotFound,
    JobNotRetryable,
    QuotaExhausted,
)
from emeterai.jobs.config import JobSettings
from emeterai.jobs.intake import BulkDocument, Position, check_position
from emeterai.jobs.models import Job, JobItem
from emeterai.pdf import Placement
from emeterai.quota import quota_accounts, quota_balance
from emeterai.stamping.models import Stamp
from emeterai.stamping.service import (
    Reservation,
    StampRequest,
    check_idempotency_key,
    release_expired,
    reserve_stamp,
)

__all__ = [
    "BulkRequest",
    "JobProgress",
    "ReportLine",
    "SubmittedJob",
    "item_idempotency_key",
    "item_request",
    "job_progress",
    "job_report",
    "list_jobs",
    "retry_job",
    "submit_bulk",
    "submit_job",
    "write_report_csv",
    "write_results_zip",
]

WEBHOOK_URL_LENGTH_MAX = 2000
LIST_LIMIT_MAX = 200


@dataclass(frozen=True)
class BulkRequest:
    account_id: int
    documents: Sequence[BulkDocument]
    webhook_url: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class SubmittedJob:
    job_id: int
    item_count: int
    # Shown to the submitter: it verifies the completion webhook's HMAC.
    webhook_secret: str | None
    replayed: bool


@dataclass(frozen=True)
class JobProgress:
    job_id: int
    account_id: int
    state: str
    item_count: int
    queued: int
    running: int
    stamped: int
    failed: int
    dead: int
    created_at: datetime
    finished_at: datetime | None
    webhook_state: str | None
    purged: bool

    @property
    def done(self) -> int:
        return self.stamped + self.failed + self.dead

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.job_id,
            "state": self.state,
            "item_count": self.item_count,
            "queued": self.queued,
            "running": self.running,
            "stamped": self.stamped,
            "failed": self.failed,
            "dead": self.dead,
            "done": self.done,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "webhook_state": self.webhook_state,
            "documents_purged": self.purged,
        }


@dataclass(frozen=True)
class ReportLine:
    position: int
    name: str
    state: str
    serial: str | None
    error_code: str | None
    detail: str | None
    attempts: int
    document_sha256: str | None
    blob_key: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "position": self.position,
            "name": self.name,
            "state": self.state,
            "serial": self.serial,
            "error_code": self.error_code,
            "detail": self.detail,
            "attempts": self.attempts,
            "document_sha256": self.document_sha256,
        }


def check_webhook_url(url: str | None) -> str | None:
    if url is None or not url.strip():
        return None
    parts = urlsplit(url)
    if (
        len(url) > WEBHOOK_URL_LENGTH_MAX
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or not url.isascii()
        or not url.isprintable()
    ):
        raise InvalidWebhookUrl(f"not a usable webhook URL: {url[:100]}")
    return url


def check_batch(request: BulkRequest, limits: JobSettings, *, document_bytes_max: int) -> None:
    """The bounds again, whoever built the request (HTTP, CLI, web)."""
    if not request.documents:
        raise BatchEmpty("send at least one PDF, or a ZIP of PDFs")
    if len(request.documents) > limits.documents_max:
        raise BatchTooLarge(f"a batch holds at most {limits.documents_max} documents")
    total = sum(len(document.data) for document in request.documents)
    if total > limits.bytes_max:
        raise BatchTooLarge(f"the batch holds more than {limits.bytes_max} bytes, the limit")
    for document in request.documents:
        if not 0 < len(document.data) <= document_bytes_max:
            raise BatchTooLarge(
                f"{document.name[:100]} is empty or larger than {document_bytes_max} bytes"
            )
        check_position(document.position)
    check_webhook_url(request.webhook_url)
    check_idempotency_key(request.idempotency_key)


def _batch_digest(request: BulkRequest) -> str:
    digest = hashlib.sha256()
    for document in request.documents:
        position = document.position
        digest.update(
            f"{document.name}|{hashlib.sha256(document.data).hexdigest()}|{position.page}"
            f"|{position.x_pt!r}|{position.y_pt!r}\n".encode()
        )
    digest.update(f"webhook|{request.webhook_url}".encode())
    return digest.hexdigest()


def item_idempotency_key(job_id: int, position: int) -> str:
    return f"job:{job_id}:{position}"


def item_request(job: Job, item: JobItem, document: bytes = b"") -> tuple[StampRequest, str]:
    """The stamp request a document stands for, and the digest its serial records.

    Without the document's bytes it is enough to reserve (reserve_stamp reads only the
    account, the key and the digest); the worker rebuilds it with the bytes and the real
    placement before it signs.
    """
    placement = Placement(page=item.page, x_pt=item.x_pt or 0.0, y_pt=item.y_pt or 0.0)
    digest = hashlib.sha256(
        f"job-item|{item.source_sha256}|{item.page}|{item.x_pt!r}|{item.y_pt!r}".encode()
    ).hexdigest()
    request = StampRequest(
        account_id=job.account_id,
        document=document,
        placement=placement,
        idempotency_key=item_idempotency_key(job.id, item.position),
    )
    return request, digest


def reserve_item(
    session: Session, job: Job, item: JobItem, *, now: datetime, ttl_s: int
) -> Reservation:
    request, digest = item_request(job, item)
    held = reserve_stamp(session, request, request_sha256=digest, now=now, ttl_s=ttl_s)
    if not isinstance(held, Reservation):
        # Only a live serial with this key could replay, and it would be this item's own.
        raise IdempotencyConflict(f"document {item.position} of job {job.id} is already stamped")
    item.serial = held.serial
    return held


def submit_job(
    session: Session,
    request: BulkRequest,
    *,
    blob_keys: Sequence[str],
    limits: JobSettings,
    now: datetime,
) -> SubmittedJob:
    """Insert the job and its documents and reserve one quota each: one transaction."""
    if len(blob_keys) != len(request.documents):
        raise BatchEmpty("every document needs its stored copy")
    request_sha256 = _batch_digest(request)
    if request.idempotency_key is not None:
        earlier = session.scalars(
            select(Job).where(
                Job.account_id == request.account_id,
                Job.idempotency_key == request.idempotency_key,
            )
        ).first()
        if earlier is not None:
            if earlier.request_sha256 != request_sha256:
                raise IdempotencyConflict("this idempotency key was used for another batch")
            return SubmittedJob(earlier.id, earlier.item_count, earlier.webhook_secret, True)
    needed = len(request.documents)
    accounts = quota_accounts(session, request.account_id, now=now)
    release_expired(session, now=now, debit_account_id=accounts.quota.id)
    available = quota_balance(session, request.account_id, now=now).available
    if available < needed:
        raise QuotaExhausted(
            f"the batch needs {needed} e-Meterai; this account has {available}",
            needed=needed,
            available=available,
        )
    webhook_url = check_webhook_url(request.webhook_url)
    job = Job(
        account_id=request.account_id,
        state="queued",
        idempotency_key=request.idempotency_key,
        request_sha256=request_sha256,
        item_count=needed,
        stamped_count=0,
        failed_count=0,
        dead_count=0,
        size_bytes=sum(len(document.data) for document in request.documents),
        webhook_url=webhook_url,
        webhook_secret=f"whsec_{secrets.token_urlsafe(32)}" if webhook_url else None,
        webhook_attempts=0,
        created_at=now,
    )
    session.add(job)
    session.flush()
    for position, (document, key) in enumerate(
        zip(request.documents, blob_keys, strict=True), start=1
    ):
        item = JobItem(
            job_id=job.id,
            position=position,
            name=document.name[:255],
            source_blob_key=key,
            source_sha256=hashlib.sha256(document.data).hexdigest(),
            size_bytes=len(document.data),
            page=document.position.page,
            x_pt=document.position.x_pt,
            y_pt=document.position.y_pt,
            state="queued",
            attempts=0,
            run_after=now,
        )
        # Reserve first, then insert the row with its serial: one INSERT, no UPDATE.
        reserve_item(session, job, item, now=now, ttl_s=limits.reservation_ttl_s)
        session.add(item)
    session.flush()
    return SubmittedJob(job.id, needed, job.webhook_secret, False)


def submit_bulk(
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    request: BulkRequest,
    *,
    limits: JobSettings,
    document_bytes_max: int,
    clock: Clock,
) -> SubmittedJob:
    """The submission workflow: check the bounds, store the documents, then one commit."""
    check_batch(request, limits, document_bytes_max=document_bytes_max)
    keys = [blobs.put(document.data) for document in request.documents]
    with transaction(sessions) as session:
        return submit_job(session, request, blob_keys=keys, limits=limits, now=clock.now())


def _job_of(session: Session, job_id: int, account_id: int | None) -> Job:
    job = session.get(Job, job_id)
    # Another account's job is simply not found; operators (account_id None) see all.
    if job is None or (account_id is not None and job.account_id != account_id):
        raise JobNotFound(f"no bulk job {job_id}")
    return job


def _progress(session: Session, job: Job) -> JobProgress:
    rows = session.execute(
        select(JobItem.state, func.count())
        .where(JobItem.job_id == job.id, JobItem.state.in_(("queued", "running")))
        .group_by(JobItem.state)
    ).all()
    counts = {str(state): int(count) for state, count in rows}
    return JobProgress(
        job_id=job.id,
        account_id=job.account_id,
        state=job.state,
        item_count=job.item_count,
        queued=counts.get("queued", 0),
        running=counts.get("running", 0),
        stamped=job.stamped_count,
        failed=job.failed_count,
        dead=job.dead_count,
        created_at=job.created_at,
        finished_at=job.finished_at,
        webhook_state=job.webhook_state,
        purged=job.purged_at is not None,
    )


def job_progress(session: Session, job_id: int, *, account_id: int | None) -> JobProgress:
    return _progress(session, _job_of(session, job_id, account_id))


def list_jobs(
    session: Session,
    *,
    account_id: int | None,
    state: str | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[JobProgress]:
    """Newest first, keyset pagination on the id; `state="dead"` lists the dead letters."""
    query = select(Job)
    if account_id is not None:
        query = query.where(Job.account_id == account_id)
    if state is not None:
        query = query.where(Job.state == state)
    if before_id is not None:
        query = query.where(Job.id < before_id)
    jobs = session.scalars(query.order_by(Job.id.desc()).limit(min(limit, LIST_LIMIT_MAX))).all()
    return [_progress(session, job) for job in jobs]


def job_report(session: Session, job_id: int, *, account_id: int | None) -> list[ReportLine]:
    """One line per document: its serial once stamped, else its state and error code."""
    job = _job_of(session, job_id, account_id)
    rows = session.execute(
        select(JobItem, Stamp)
        .outerjoin(Stamp, (Stamp.serial == JobItem.serial) & (JobItem.state == "stamped"))
        .where(JobItem.job_id == job.id)
        .order_by(JobItem.position)
    ).all()
    return [
        ReportLine(
            position=item.position,
            name=item.name,
            state=item.state,
            serial=item.serial if item.state == "stamped" else None,
            error_code=item.error_code,
            detail=item.last_error if item.state != "stamped" else None,
            attempts=item.attempts,
            document_sha256=stamp.document_sha256 if stamp is not None else None,
            blob_key=stamp.blob_key if stamp is not None else None,
        )
        for item, stamp in rows
    ]


def write_report_csv(lines: Sequence[ReportLine], target: IO[str]) -> None:
    writer = csv.writer(target)
    writer.writerow(["position", "name", "state", "serial", "error_code", "detail"])
    for line in lines:
        writer.writerow(
            [
                line.position,
                line.name,
                line.state,
                line.serial or "",
                line.error_code or "",
                line.detail or "",
            ]
        )


def result_name(line: ReportLine) -> str:
    stem = line.name[:-4] if line.name.lower().endswith(".pdf") else line.name
    return f"{line.position:04d}-{stem[:100]}-{line.serial}.pdf"


def write_results_zip(lines: Sequence[ReportLine], blobs: BlobStore, target: IO[bytes]) -> int:
    """The stamped PDFs and report.csv, as a ZIP. Run it outside any transaction.

    Returns how many stamped documents it holds; one past its retention is named in the
    report (STAMP_RETENTION_OVER) instead.
    """
    written = 0
    report = []
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for line in lines:
            data = blobs.get(line.blob_key) if line.blob_key else None
            if line.state == "stamped" and data is None:
                line = ReportLine(
                    **{
                        **line.__dict__,
                        "error_code": "STAMP_RETENTION_OVER",
                        "detail": "the stamped document is past its retention",
                    }
                )
            if data is not None:
                # PDFs barely compress; storing keeps the ZIP fast to build.
                archive.writestr(f"stamped/{result_name(line)}", data)
                written += 1
            report.append(line)
        text = io.StringIO()
        write_report_csv(report, text)
        archive.writestr("report.csv", text.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    return written


def retry_job(session: Session, job_id: int, *, now: datetime) -> int:
    """An operator sends a dead-lettered job's dead documents back to the queue.

    Their reservations were voided when they died; each gets a fresh one when a worker
    picks it up (or fails with QUOTA_EXHAUSTED if the account spent it meanwhile).
    Returns how many documents were re-queued.
    """
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise JobNotFound(f"no bulk job {job_id}")
    if job.state != "dead" or job.purged_at is not None:
        raise JobNotRetryable(f"job {job_id} is {job.state}; only a dead job can be retried")
    dead = session.scalars(
        select(JobItem).where(JobItem.job_id == job.id, JobItem.state == "dead").with_for_update()
    ).all()
    for item in dead:
        item.state = "queued"
        item.attempts = 0
        item.error_code = None
        item.finished_at = None
        item.run_after = now
    job.dead_count = 0
    job.state = "running"
    job.finished_at = None
    job.webhook_state = None
    job.webhook_attempts = 0
    job.webhook_next_at = None
    session.flush()
    return len(dead)


def shared_position(page: int, x_pt: float | None, y_pt: float | None) -> Position:
    return check_position(Position(page=page, x_pt=x_pt, y_pt=y_pt))
