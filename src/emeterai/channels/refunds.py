"""Refunds, as the issuer's 2024 policy has it: unused quota only, the full price less a
transfer fee. A refund is a set of reversing transfers; quota already used or reserved
for a stamp in progress is never touched.

The unused part of an order is min(the order's count, what the user still holds): quota
is fungible, so the stamps a user used are counted against their orders first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from emeterai.channels.management import FACE_VALUE_RUPIAH, NO_KEY_UPDATE, lock_channel
from emeterai.channels.models import Order
from emeterai.channels.orders import add_event
from emeterai.errors import ExceedsCredits, NothingToRefund, OrderNotFound, OrderNotRefundable
from emeterai.ledger import LEDGER_RUPIAH, open_account, transfer
from emeterai.quota import quota_accounts


@dataclass(frozen=True)
class Refund:
    order_id: str
    refunded_count: int
    kept_count: int
    refund_rupiah: int
    transfer_fee_rupiah: int
    replayed: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "order_id": self.order_id,
            "status": "refunded",
            "refunded_count": self.refunded_count,
            "kept_count": self.kept_count,
            "refund_rupiah": self.refund_rupiah,
            "transfer_fee_rupiah": self.transfer_fee_rupiah,
            "replayed": self.replayed,
        }


def _result(order: Order, fee: int, *, replayed: bool) -> Refund:
    return Refund(
        order_id=order.id,
        refunded_count=order.refunded_count,
        kept_count=order.count - order.refunded_count,
        refund_rupiah=order.refunded_count * order.unit_price_rupiah - fee,
        transfer_fee_rupiah=fee,
        replayed=replayed,
    )


def refund_order(
    session: Session, order_id: str, *, now: datetime, channel_id: int | None = None
) -> Refund:
    """Refund the unused part of a credited order; a repeat answers as the first did."""
    order = session.get(Order, order_id[:40], with_for_update=NO_KEY_UPDATE, populate_existing=True)
    if order is None or (channel_id is not None and order.channel_id != channel_id):
        raise OrderNotFound(f"no order {order_id[:40]}")
    channel = lock_channel(session, order.channel_id)
    fee = channel.refund_fee_rupiah
    if order.status == "refunded":
        return _result(order, _fee_taken(order, fee), replayed=True)
    if order.status != "credited":
        raise OrderNotRefundable(f"order {order.id} is {order.status}, not credited")
    user = quota_accounts(session, order.account_id, now=now).quota
    unused = min(order.count, user.credits_posted - user.debits_posted - user.debits_pending)
    if unused <= 0:
        raise NothingToRefund(f"all {order.count} stamp(s) of order {order.id} are used")
    refund_rupiah = unused * order.unit_price_rupiah - fee
    if refund_rupiah <= 0:
        raise NothingToRefund(
            f"{unused} unused stamp(s) are worth Rp{unused * order.unit_price_rupiah},"
            f" no more than the Rp{fee} transfer fee"
        )
    key = f"{order.id}"
    try:
        quota = transfer(
            session,
            debit_account_id=user.id,
            credit_account_id=channel.stock_account_id,
            amount=unused,
            now=now,
            idempotency_key=f"refund:{key}",
            memo=f"refund of order {order.id}",
        )
    except ExceedsCredits as error:
        raise NothingToRefund("the quota changed while refunding; try again") from error
    duty = unused * FACE_VALUE_RUPIAH
    fees = unused * order.unit_price_rupiah - duty
    moves = [
        (channel.duty_account_id, channel.collected_account_id, duty, "refund-duty"),
        (channel.fees_account_id, channel.collected_account_id, fees, "refund-fee"),
    ]
    if fee > 0:
        retained = open_account(
            session,
            code="issuer:refund-fees",
            ledger=LEDGER_RUPIAH,
            kind="issuer_refund_fees",
            now=now,
            debits_must_not_exceed_credits=False,
        )
        moves.append((channel.collected_account_id, retained.id, fee, "refund-transfer-fee"))
    for debit, credit, amount, prefix in moves:
        if amount > 0:
            transfer(
                session,
                debit_account_id=debit,
                credit_account_id=credit,
                amount=amount,
                now=now,
                idempotency_key=f"{prefix}:{key}",
                memo=f"refund of order {order.id}",
            )
    order.status = "refunded"
    order.refunded_count = unused
    order.refund_transfer_id = quota.id
    add_event(
        session,
        order.id,
        "refunded",
        now,
        f"{unused} unused stamp(s) refunded: Rp{refund_rupiah} (Rp{order.unit_price_rupiah}"
        f" each, less a Rp{fee} transfer fee); {order.count - unused} used stamp(s) kept",
    )
    session.flush()
    return _result(order, fee, replayed=False)


def _fee_taken(order: Order, fee_now: int) -> int:
    # The fee taken is on the ledger; the channel's current fee may have changed since.
    from sqlalchemy import select

    from emeterai.ledger.models import Transfer

    session = Session.object_session(order)
    if session is None:
        return fee_now
    taken = session.scalars(
        select(Transfer.amount).where(Transfer.idempotency_key == f"refund-transfer-fee:{order.id}")
    ).first()
    return int(taken or 0)
