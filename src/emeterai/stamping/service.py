"""Stamping: DESIGN.md flow 2.

validate -> reserve one quota and mint a serial (commit) -> sign -> post the reservation,
mark the serial used and record the stamp (one commit). Any failure voids the
reservation; a crash leaves it to expire, and the quota comes back.

`issue_stamp` is a workflow, not a single unit of work: it opens its own two
transactions, because the reservation must be durable before the slow signing starts and
no transaction may stay open across it. Each step is a use case that takes a session.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from emeterai.blobs import BlobStore
from emeterai.clock import Clock
from emeterai.config import Settings
from emeterai.db import transaction
from emeterai.errors import (
    AlreadyStamped,
    EmeteraiError,
    ExceedsCredits,
    IdempotencyConflict,
    InvalidIdempotencyKey,
    PageOutOfRange,
    PdfLocked,
    PdfTooLarge,
    QuotaExhausted,
    RequestInProgress,
    ReservationExpired,
    SerialNotFound,
    SigningFailed,
    StampRetentionOver,
    TransferConflict,
)
from emeterai.faults import fault_point
from emeterai.ledger import expire_due, post_pending, reserve, void_pending
from emeterai.pdf import STAMP_SIZE_PT, Placement, check_placement, inspect_pdf
from emeterai.quota import quota_accounts
from emeterai.serials import Serial, generate_serial, normalise_serial
from emeterai.stamping.models import Stamp
from emeterai.stamping.signing import Signer, SignJob

__all__ = [
    "Reservation",
    "Stamp",
    "StampRequest",
    "StampedDocument",
    "abandon_stamp",
    "complete_stamp",
    "issue_stamp",
    "placement_for",
    "release_expired",
    "reserve_stamp",
]

IDEMPOTENCY_KEY_LENGTH_MAX = 128
MARGIN_PT = 36.0


@dataclass(frozen=True)
class StampRequest:
    account_id: int
    document: bytes
    placement: Placement
    idempotency_key: str | None = None
    # Duty is due once per document; a second stamp is for documents with several parties.
    allow_additional: bool = False


@dataclass(frozen=True)
class Reservation:
    serial: str
    transfer_id: int


@dataclass(frozen=True)
class StampedDocument:
    serial: str
    document: bytes
    document_sha256: str
    signed_at: datetime
    replayed: bool


def request_digest(document: bytes, placement: Placement) -> str:
    """What a request asks for: the document and the place. Same digest, same stamp."""
    digest = hashlib.sha256(document)
    digest.update(f"|{placement.page}|{placement.x_pt!r}|{placement.y_pt!r}".encode())
    return digest.hexdigest()


def placement_for(
    document: bytes, *, page: int, x_pt: float | None, y_pt: float | None, settings: Settings
) -> Placement:
    """The requested place; a missing coordinate defaults to the bottom-right corner."""
    if x_pt is not None and y_pt is not None:
        return Placement(page=page, x_pt=x_pt, y_pt=y_pt)
    if len(document) > settings.upload_bytes_max:
        raise PdfTooLarge(
            f"the file has {len(document)} bytes; the limit is {settings.upload_bytes_max}"
        )
    facts = inspect_pdf(document, pages_max=settings.pages_max)
    if not 1 <= page <= facts.page_count:
        raise PageOutOfRange(f"page {page} does not exist; the document has {facts.page_count}")
    box = facts.pages[page - 1]
    return Placement(
        page=page,
        x_pt=x_pt if x_pt is not None else max(0.0, box.width_pt - STAMP_SIZE_PT - MARGIN_PT),
        y_pt=y_pt if y_pt is not None else min(MARGIN_PT, max(0.0, box.height_pt - STAMP_SIZE_PT)),
    )


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not (1 <= len(key) <= IDEMPOTENCY_KEY_LENGTH_MAX and key.isascii() and key.isprintable()):
        raise InvalidIdempotencyKey(
            f"the idempotency key must be 1 to {IDEMPOTENCY_KEY_LENGTH_MAX} printable ASCII"
            " characters"
        )
    return key


def validate_document(request: StampRequest, settings: Settings) -> None:
    """Everything that can refuse the document is checked before any quota is touched."""
    if len(request.document) > settings.upload_bytes_max:
        raise PdfTooLarge(
            f"the file has {len(request.document)} bytes; the limit is {settings.upload_bytes_max}"
        )
    facts = inspect_pdf(request.document, pages_max=settings.pages_max)
    if facts.certified_no_changes:
        raise PdfLocked()
    if facts.stamp_serials and not request.allow_additional:
        raise AlreadyStamped(
            f"the document already carries e-Meterai {', '.join(facts.stamp_serials)}",
            serials=list(facts.stamp_serials),
        )
    check_placement(facts, request.placement)


def release_expired(
    session: Session, *, now: datetime, limit: int = 1000, debit_account_id: int | None = None
) -> int:
    """Expire overdue reservations: their quota comes back and their serials are voided."""
    expired = expire_due(session, now=now, limit=limit, debit_account_id=debit_account_id)
    if expired:
        session.execute(
            update(Serial)
            .where(Serial.reservation_transfer_id.in_(expired), Serial.state == "reserved")
            .values(state="voided")
        )
    return len(expired)


def _load_stamp(session: Session, serial: str) -> Stamp:
    return session.scalars(select(Stamp).where(Stamp.serial == serial)).one()


def _replay(
    session: Session,
    account_id: int,
    key: str,
    request_sha256: str,
    now: datetime,
) -> Stamp | None:
    live = session.scalars(
        select(Serial).where(
            Serial.account_id == account_id,
            Serial.idempotency_key == key,
            Serial.state != "voided",
        )
    ).first()
    if live is None:
        return None
    if live.request_sha256 != request_sha256:
        raise IdempotencyConflict("this idempotency key was used for another document or place")
    if live.state == "reserved":
        raise RequestInProgress(f"stamp {live.serial} for this key is still being made")
    return _load_stamp(session, live.serial)


def reserve_stamp(
    session: Session,
    request: StampRequest,
    *,
    request_sha256: str,
    now: datetime,
    ttl_s: int,
) -> Reservation | Stamp:
    """Hold one quota and mint its serial; or return the stamp an earlier retry made."""
    # Lock first: a concurrent twin with the same idempotency key waits here, then sees
    # our serial in _replay instead of racing us into the unique index.
    accounts = quota_accounts(session, request.account_id, now=now, lock=True)
    # Our own overdue reservations come back first, so they can pay for this one.
    release_expired(session, now=now, limit=100, debit_account_id=accounts.quota.id)
    if request.idempotency_key is not None:
        earlier = _replay(session, request.account_id, request.idempotency_key, request_sha256, now)
        if earlier is not None:
            return earlier
    serial = generate_serial()
    try:
        pending = reserve(
            session,
            debit_account_id=accounts.quota.id,
            credit_account_id=accounts.used.id,
            amount=1,
            now=now,
            expires_at=now + timedelta(seconds=ttl_s),
            memo=f"stamp {serial}",  # no key: the serial is new, and its row is unique
        )
    except ExceedsCredits as error:
        raise QuotaExhausted("this account has no e-Meterai quota left") from error
    session.add(
        Serial(
            serial=serial,
            state="reserved",
            account_id=request.account_id,
            reservation_transfer_id=pending.id,
            idempotency_key=request.idempotency_key,
            request_sha256=request_sha256,
            created_at=now,
        )
    )
    session.flush()
    return Reservation(serial=serial, transfer_id=pending.id)


def complete_stamp(
    session: Session,
    reservation: Reservation,
    request: StampRequest,
    *,
    document: bytes,
    blob_key: str,
    signed_at: datetime,
    now: datetime,
) -> Stamp:
    """Post the reservation, use the serial and record the stamp: one transaction.

    Lock order is accounts, then serial, as everywhere else (reserve, void, expire).
    """
    try:
        posted = post_pending(session, reservation.transfer_id, now=now)
    except TransferConflict as error:
        # The sweeper expired it first; say the same thing as when we notice it ourselves.
        raise ReservationExpired() from error
    serial = session.get(Serial, reservation.serial, with_for_update=True)
    if serial is None or serial.state != "reserved":
        raise ReservationExpired(f"serial {reservation.serial} is no longer reserved")
    serial.state = "used"
    serial.used_at = now
    stamp = Stamp(
        serial=serial.serial,
        account_id=request.account_id,
        post_transfer_id=posted.id,
        source_sha256=hashlib.sha256(request.document).hexdigest(),
        document_sha256=hashlib.sha256(document).hexdigest(),
        size_bytes=len(document),
        page=request.placement.page,
        x_pt=request.placement.x_pt,
        y_pt=request.placement.y_pt,
        blob_key=blob_key,
        signed_at=signed_at,
        created_at=now,
    )
    session.add(stamp)
    session.flush()
    return stamp


def abandon_stamp(session: Session, reservation: Reservation, *, now: datetime) -> None:
    """Void the reservation and the serial. Harmless if it was already settled."""
    try:
        void_pending(session, reservation.transfer_id, now=now)
    except TransferConflict:
        return  # posted (the stamp exists) or expired (already released)
    session.execute(
        update(Serial)
        .where(Serial.serial == reservation.serial, Serial.state == "reserved")
        .values(state="voided")
    )


def _stamped(stamp: Stamp, blobs: BlobStore, *, replayed: bool) -> StampedDocument:
    if stamp.blob_key is None:
        # Retention purged the bytes (emeterai.jobs.retention); ledger, serial and hashes stay.
        raise StampRetentionOver(f"the stamped document {stamp.serial} is past its retention")
    document = blobs.get(stamp.blob_key)
    if document is None:
        raise SigningFailed(f"the stamped document {stamp.serial} is no longer kept")
    return StampedDocument(
        serial=stamp.serial,
        document=document,
        document_sha256=stamp.document_sha256,
        signed_at=stamp.signed_at,
        replayed=replayed,
    )


def issue_stamp(
    sessions: sessionmaker[Session],
    request: StampRequest,
    *,
    sign: Signer,
    blobs: BlobStore,
    settings: Settings,
    clock: Clock,
) -> StampedDocument:
    check_idempotency_key(request.idempotency_key)
    validate_document(request, settings)
    request_sha256 = request_digest(request.document, request.placement)
    with transaction(sessions) as session:
        held = reserve_stamp(
            session,
            request,
            request_sha256=request_sha256,
            now=clock.now(),
            ttl_s=settings.reservation_ttl_s,
        )
    if isinstance(held, Stamp):
        return _stamped(held, blobs, replayed=True)
    fault_point(settings.fault_points, "stamp.after_reserve")
    try:
        signed_at = clock.now()
        document = sign(
            SignJob(
                document=request.document,
                serial=held.serial,
                verify_url=settings.verify_url(held.serial),
                placement=request.placement,
                signed_at=signed_at,
            )
        )
        fault_point(settings.fault_points, "stamp.after_sign")
        blob_key = blobs.put(document)
        with transaction(sessions) as session:
            complete_stamp(
                session,
                held,
                request,
                document=document,
                blob_key=blob_key,
                signed_at=signed_at,
                now=clock.now(),
            )
        fault_point(settings.fault_points, "stamp.after_post")
    except BaseException as error:
        with transaction(sessions) as session:
            abandon_stamp(session, held, now=clock.now())
        if isinstance(error, EmeteraiError) or not isinstance(error, Exception):
            raise
        raise SigningFailed(f"stamping failed: {type(error).__name__}") from error
    return StampedDocument(
        serial=held.serial,
        document=document,
        document_sha256=hashlib.sha256(document).hexdigest(),
        signed_at=signed_at,
        replayed=False,
    )


def list_stamps(
    session: Session, account_id: int, *, limit: int, before_id: int | None = None
) -> list[Stamp]:
    """The account's own stamps, newest first (keyset pagination on the id)."""
    query = select(Stamp).where(Stamp.account_id == account_id)
    if before_id is not None:
        query = query.where(Stamp.id < before_id)
    return list(session.scalars(query.order_by(Stamp.id.desc()).limit(min(limit, 1000))).all())


def stamped_document_of(
    session: Session, blobs: BlobStore, account_id: int, serial: str
) -> tuple[str, bytes]:
    """The stamped PDF and its serial, to its owner only: another account's serial is
    simply not found."""
    stamp = session.scalars(
        select(Stamp).where(
            Stamp.serial == normalise_serial(serial), Stamp.account_id == account_id
        )
    ).first()
    if stamp is None:
        raise SerialNotFound(f"you have no stamp with serial {serial[:30]}")
    return stamp.serial, _stamped(stamp, blobs, replayed=True).document
