"""Payment confirmations: a signed callback credits quota exactly once.

One transaction records the payment, moves the order to `credited` and makes the ledger
transfers (stock -> the user's quota; on the rupiah ledger, what was collected into duty
and fees). Exactly-once holds under any concurrency because of:
- the order row lock (FOR UPDATE; BEGIN IMMEDIATE on SQLite), after which the payment is
  re-read: a duplicate that waited sees the committed payment and gets the same answer;
- UNIQUE (channel_id, payment_reference) and UNIQUE (order_id) on payments;
- ledger idempotency keys derived from the channel and the payment reference.

A refusal credits nothing and is recorded in `channel_rejections` for the operator.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from emeterai.channels import signing
from emeterai.channels.keys import live_webhook_secrets
from emeterai.channels.management import (
    FACE_VALUE_RUPIAH,
    NO_KEY_UPDATE,
    lock_channel,
    stock_topup,
)
from emeterai.channels.models import Channel, Order, Payment, Rejection, WebhookNonce
from emeterai.channels.orders import add_event
from emeterai.clock import Clock
from emeterai.config import Settings
from emeterai.db import read_transaction, transaction
from emeterai.errors import (
    BadSignature,
    MalformedConfirmation,
    OrderAlreadyPaid,
    OrderOfAnotherChannel,
    PaymentReferenceConflict,
    PaymentRejected,
    StaleTimestamp,
    UnknownOrder,
    WrongAmount,
)
from emeterai.faults import fault_point
from emeterai.ledger import Move, transfers
from emeterai.quota import quota_accounts

log = logging.getLogger("emeterai.channels")

BODY_BYTES_MAX = 4096
REPLAY_WINDOW_S = 300
REFERENCE_LENGTH_MAX = 128
AMOUNT_RUPIAH_MAX = 10**13
NONCE_PRUNE_PROBABILITY = 0.02
NONCE_PRUNE_BATCH = 1000


@dataclass(frozen=True)
class Confirmation:
    order_id: str
    payment_reference: str
    amount_rupiah: int


@dataclass(frozen=True)
class Credited:
    order_id: str
    payment_reference: str
    amount_rupiah: int
    status: str
    count: int
    duplicate: bool  # an earlier confirmation of this payment already credited it
    late: bool  # paid after the order had expired

    def as_dict(self) -> dict[str, object]:
        return {
            "order_id": self.order_id,
            "payment_reference": self.payment_reference,
            "amount_rupiah": self.amount_rupiah,
            "status": self.status,
            "count": self.count,
            "duplicate": self.duplicate,
            "late": self.late,
        }


def check_payment_reference(reference: object) -> str:
    if (
        not isinstance(reference, str)
        or not 1 <= len(reference) <= REFERENCE_LENGTH_MAX
        or not reference.isascii()
        or not reference.isprintable()
    ):
        raise MalformedConfirmation(
            f"payment_reference must be 1 to {REFERENCE_LENGTH_MAX} printable ASCII characters"
        )
    return reference


def parse_confirmation(body: bytes) -> Confirmation:
    if len(body) > BODY_BYTES_MAX:
        raise MalformedConfirmation(f"the body is larger than {BODY_BYTES_MAX} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedConfirmation("the body is not JSON") from error
    if not isinstance(data, dict):
        raise MalformedConfirmation("the body must be a JSON object")
    order_id = data.get("order_id")
    amount = data.get("amount_rupiah")
    if not isinstance(order_id, str) or not 1 <= len(order_id) <= 40:
        raise MalformedConfirmation("order_id must be the order's id")
    if (
        isinstance(amount, bool)
        or not isinstance(amount, int)
        or not 0 < amount <= AMOUNT_RUPIAH_MAX
    ):
        raise MalformedConfirmation("amount_rupiah must be a positive whole number of rupiah")
    return Confirmation(
        order_id=order_id,
        payment_reference=check_payment_reference(data.get("payment_reference")),
        amount_rupiah=amount,
    )


def _payments_of(session: Session, channel_id: int, reference: str, order_id: str) -> list[Payment]:
    """The payment recorded under this reference, and the one this order already has."""
    return list(
        session.scalars(
            select(Payment).where(
                or_(
                    and_(Payment.channel_id == channel_id, Payment.payment_reference == reference),
                    Payment.order_id == order_id,
                )
            )
        ).all()
    )


def record_payment(
    session: Session,
    channel_id: int,
    confirmation: Confirmation,
    *,
    source: str,
    now: datetime,
    fault_points: str = "",
) -> Credited:
    """Record a confirmed payment and credit its order, or answer as the first time did."""
    order = session.get(
        Order, confirmation.order_id, with_for_update=NO_KEY_UPDATE, populate_existing=True
    )
    if order is None:
        raise UnknownOrder(f"no order {confirmation.order_id}")
    if order.channel_id != channel_id:
        raise OrderOfAnotherChannel(f"order {order.id} was not taken by this channel")
    reference = confirmation.payment_reference
    # Re-read after the lock: a twin that held it has committed by now.
    known = _payments_of(session, channel_id, reference, order.id)
    mine = (channel_id, reference)
    earlier = next((row for row in known if (row.channel_id, row.payment_reference) == mine), None)
    if earlier is not None:
        if (earlier.order_id, earlier.amount_rupiah) != (order.id, confirmation.amount_rupiah):
            raise PaymentReferenceConflict(
                f"payment reference {reference} was recorded for another order or amount"
            )
        return _answer(order, earlier, duplicate=True, late=earlier.received_at > order.expires_at)
    if confirmation.amount_rupiah != order.amount_rupiah:
        raise WrongAmount(
            f"order {order.id} costs Rp{order.amount_rupiah}, not Rp{confirmation.amount_rupiah}",
            expected_rupiah=order.amount_rupiah,
        )
    paid_already = next((row for row in known if row.order_id == order.id), None)
    if paid_already is not None:
        raise OrderAlreadyPaid(
            f"order {order.id} was already paid under reference {paid_already.payment_reference}"
        )
    late = order.status == "expired" or order.expires_at <= now
    # The order goes from awaiting payment (or expired) to credited in this one
    # transaction: no other transaction ever sees it merely paid.
    if late:
        add_event(
            session,
            order.id,
            "paid_after_expiry",
            now,
            f"payment {reference} arrived after the order expired; the money was taken,"
            " so the quota is credited",
        )
    else:
        add_event(session, order.id, "paid", now, f"payment {reference} via {source}")
    session.flush()
    fault_point(fault_points, "payment.after_paid")

    channel = lock_channel(session, channel_id)
    credit = _credit(session, channel, order, reference, now=now)
    payment = Payment(
        channel_id=channel_id,
        order_id=order.id,
        payment_reference=reference,
        amount_rupiah=confirmation.amount_rupiah,
        source=source,
        received_at=now,
        credit_transfer_id=credit,
    )
    session.add(payment)
    try:
        session.flush()
    except IntegrityError as error:
        # Same reference for another order, committed concurrently. The whole
        # transaction rolls back, so nothing of ours stays.
        raise PaymentReferenceConflict(f"payment reference {reference} is taken") from error
    order.status = "credited"
    order.credit_transfer_id = credit
    order.credited_at = now
    add_event(session, order.id, "credited", now, f"{order.count} stamp(s) added to the quota")
    session.flush()
    log.info("payment %s credited order %s (%s)", reference, order.id, source)
    return _answer(order, payment, duplicate=False, late=late)


def _credit(
    session: Session, channel: Channel, order: Order, reference: str, *, now: datetime
) -> int:
    """The ledger side of a sale, as one batch of moves; returns the quota transfer's id."""
    key = f"{channel.id}:{reference}"
    topup = stock_topup(session, channel, order.count, key=key, now=now)
    if topup and channel.kind != "shop" and channel.credit_used > channel.credit_limit:
        log.warning(
            "channel %s is past its credit limit (%d of %d) to credit paid order %s",
            channel.name,
            channel.credit_used,
            channel.credit_limit,
            order.id,
        )
    user = quota_accounts(session, order.account_id, now=now)
    duty = order.count * FACE_VALUE_RUPIAH
    fees = order.amount_rupiah - duty
    memo = f"order {order.id}"
    sale = Move(channel.stock_account_id, user.quota.id, order.count, f"sale:{key}", memo)
    collected = channel.collected_account_id
    moves = [topup] if topup else []
    moves.append(sale)
    moves.append(Move(collected, channel.duty_account_id, duty, f"duty:{key}", memo))
    if fees > 0:
        moves.append(Move(collected, channel.fees_account_id, fees, f"fee:{key}", memo))
    made = transfers(session, moves, now=now)
    return made[moves.index(sale)].id


def _answer(order: Order, payment: Payment, *, duplicate: bool, late: bool) -> Credited:
    return Credited(
        order_id=order.id,
        payment_reference=payment.payment_reference,
        amount_rupiah=payment.amount_rupiah,
        status=order.status,
        count=order.count,
        duplicate=duplicate,
        late=late,
    )


def record_rejection(
    session: Session,
    error: PaymentRejected,
    *,
    now: datetime,
    channel_id: int | None,
    confirmation: Confirmation | None,
) -> None:
    session.add(
        Rejection(
            channel_id=channel_id,
            code=error.code,
            order_id=confirmation.order_id[:40] if confirmation else None,
            payment_reference=confirmation.payment_reference[:128] if confirmation else None,
            amount_rupiah=confirmation.amount_rupiah if confirmation else None,
            detail=error.detail[:300],
            received_at=now,
        )
    )


def _remember_signature(
    session: Session, channel_id: int, digest_hex: str, timestamp_s: int, now: datetime
) -> None:
    from emeterai.errors import ReplayedConfirmation

    # The unique (channel, signature) index is the check: no read first, under the lock.
    # This is the transaction's first write, so a refusal rolls back nothing else.
    session.add(
        WebhookNonce(
            channel_id=channel_id, signature=digest_hex, timestamp_s=timestamp_s, received_at=now
        )
    )
    try:
        session.flush()
    except IntegrityError as error:
        raise ReplayedConfirmation("this signed confirmation was already received") from error


def _attribute(session: Session, body: bytes) -> int | None:
    """Best effort, for the operator's list only: the channel of the order the body names."""
    try:
        order_id = json.loads(body[:BODY_BYTES_MAX]).get("order_id")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    if not isinstance(order_id, str) or len(order_id) > 40:
        return None
    order = session.get(Order, order_id)
    return order.channel_id if order is not None else None


def _prune_nonces(sessions: sessionmaker[Session], now: datetime) -> None:
    from datetime import timedelta

    horizon = now - timedelta(seconds=2 * REPLAY_WINDOW_S)
    with transaction(sessions) as session:
        old = select(WebhookNonce.id).where(WebhookNonce.received_at < horizon)
        ids = list(session.scalars(old.limit(NONCE_PRUNE_BATCH)).all())
        if ids:
            session.execute(delete(WebhookNonce).where(WebhookNonce.id.in_(ids)))


def handle_webhook(
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: Clock,
    *,
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    channel_id: int | None = None,
    source: str = "webhook",
) -> Credited:
    """The payment callback: check timestamp, signature and replay, then credit.

    `channel_id` comes from the caller's API key when it sent one; otherwise the channel
    is the order's, and the signature must be that channel's."""
    confirmation: Confirmation | None = None
    now = clock.now()
    try:
        timestamp_s = signing.parse_timestamp(timestamp_header)
        if timestamp_s is None:
            raise StaleTimestamp("X-Emeterai-Timestamp must be the unix time in seconds")
        if abs(now.timestamp() - timestamp_s) > REPLAY_WINDOW_S:
            raise StaleTimestamp(
                f"the timestamp is more than {REPLAY_WINDOW_S} s away from the server's clock"
            )
        digest_hex = signing.parse_signature(signature_header)
        if digest_hex is None:
            raise BadSignature("X-Emeterai-Signature must be sha256=<64 hex digits>")
        confirmation = parse_confirmation(body)
        # Who signed it is read from a snapshot, without SQLite's write lock: a secret
        # rotated meanwhile stays valid through its overlap window, and every write
        # below (nonce, payment, credit) is checked again under the lock.
        with read_transaction(sessions) as session:
            if channel_id is None:
                order = session.get(Order, confirmation.order_id)
                if order is None:
                    raise UnknownOrder(f"no order {confirmation.order_id}")
                channel_id = order.channel_id
            secrets = live_webhook_secrets(session, settings, channel_id, now=now)
        if not signing.matches(secrets, timestamp_s, body, digest_hex):
            raise BadSignature("the signature does not match this channel's secret")
        fault_point(settings.fault_points, "payment.after_verify")
        with transaction(sessions) as session:
            _remember_signature(session, channel_id, digest_hex, timestamp_s, now)
            credited = record_payment(
                session,
                channel_id,
                confirmation,
                source=source,
                now=now,
                fault_points=settings.fault_points,
            )
            fault_point(settings.fault_points, "payment.after_credit")
        fault_point(settings.fault_points, "payment.after_commit")
    except PaymentRejected as error:
        log.warning("payment confirmation refused: %s %s", error.code, error.detail[:200])
        with transaction(sessions) as session:
            if channel_id is None:
                channel_id = _attribute(session, body)
            record_rejection(
                session, error, now=now, channel_id=channel_id, confirmation=confirmation
            )
        raise
    if random.random() < NONCE_PRUNE_PROBABILITY:  # noqa: S311 (not security: housekeeping)
        _prune_nonces(sessions, now)
    return credited


def list_rejections(
    session: Session, channel_id: int | None, *, limit: int = 100
) -> list[Rejection]:
    query = select(Rejection).order_by(Rejection.id.desc()).limit(max(1, min(limit, 1000)))
    if channel_id is not None:
        query = query.where(Rejection.channel_id == channel_id)
    return list(session.scalars(query).all())
