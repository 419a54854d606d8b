"""Audit checks of the sales side, for `emeterai audit` (each returns what it found broken).

The database constraints make most of these impossible; the audit proves it from rows.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from emeterai.channels.management import FACE_VALUE_RUPIAH
from emeterai.channels.models import Channel, Order, Payment
from emeterai.ledger.models import LedgerAccount, Transfer

SAMPLE_MAX = 5
STOCK_MOVES = {
    "channel-deposit:": 1,
    "channel-topup:": 1,
    "refund:": 1,
    "sale:": -1,
}


def paid_orders_are_credited(session: Session) -> list[str]:
    """Paid orders = credited orders, apart from those refunded; none stuck at `paid`."""
    problems = []
    rows = session.execute(
        select(Order.id, Order.status, Order.credit_transfer_id, Payment.credit_transfer_id)
        .outerjoin(Payment, Payment.order_id == Order.id)
        .where(
            or_(
                Payment.id.is_not(None) & Order.status.not_in(("credited", "refunded")),
                Payment.id.is_(None) & Order.status.in_(("paid", "credited", "refunded")),
                Payment.id.is_not(None) & (Order.credit_transfer_id != Payment.credit_transfer_id),
            )
        )
        .limit(SAMPLE_MAX)
    ).all()
    for order_id, status, order_credit, payment_credit in rows:
        problems.append(
            f"order {order_id} is {status} with credit {order_credit} but its payment's"
            f" credit is {payment_credit}"
        )
    return problems


def payments_credited_once(session: Session) -> list[str]:
    """Each payment has exactly one sale transfer, of the order's count, to the buyer."""
    problems = []
    rows = session.execute(
        select(
            Payment.payment_reference,
            Payment.channel_id,
            Transfer.idempotency_key,
            Transfer.amount,
            Order.count,
            LedgerAccount.owner_account_id,
            Order.account_id,
        )
        .join(Order, Order.id == Payment.order_id)
        .join(Transfer, Transfer.id == Payment.credit_transfer_id)
        .join(LedgerAccount, LedgerAccount.id == Transfer.credit_account_id)
    ).yield_per(5000)
    for reference, channel_id, key, amount, count, owner, buyer in rows:
        if key != f"sale:{channel_id}:{reference}" or amount != count or owner != buyer:
            problems.append(f"payment {reference} of channel {channel_id} credits the wrong way")
            if len(problems) >= SAMPLE_MAX:
                return problems
    sales = session.scalar(
        select(func.count()).select_from(Transfer).where(Transfer.idempotency_key.like("sale:%"))
    )
    payments = session.scalar(select(func.count()).select_from(Payment))
    if sales != payments:
        problems.append(f"{sales} sale transfers for {payments} payments")
    return problems


def channel_stock_matches_movements(session: Session) -> list[str]:
    """Each channel's stock = deposits + top-ups + refunds - sales, and nothing else."""
    problems = []
    for channel in session.scalars(select(Channel)).all():
        account = session.get(LedgerAccount, channel.stock_account_id)
        if account is None:
            problems.append(f"channel {channel.name} has no stock account")
            continue
        totals: dict[str, int] = defaultdict(int)
        for key, amount, debit in session.execute(
            select(Transfer.idempotency_key, Transfer.amount, Transfer.debit_account_id).where(
                (Transfer.debit_account_id == account.id)
                | (Transfer.credit_account_id == account.id)
            )
        ):
            prefix = next((p for p in STOCK_MOVES if (key or "").startswith(p)), None)
            sign = -1 if debit == account.id else 1
            if prefix is None or STOCK_MOVES[prefix] != sign:
                problems.append(f"channel {channel.name}: unexpected stock movement {key}")
                continue
            totals[prefix] += amount
        expected = sum(STOCK_MOVES[p] * total for p, total in totals.items())
        held = account.credits_posted - account.debits_posted
        if held != expected:
            problems.append(
                f"channel {channel.name}: stock {held} but deposits {totals['channel-deposit:']}"
                f" + top-ups {totals['channel-topup:']} + refunds {totals['refund:']}"
                f" - sales {totals['sale:']} = {expected}"
            )
    return problems


def channel_duty_matches_sales(session: Session) -> list[str]:
    """Each channel's duty account holds Rp10,000 for every stamp sold and not refunded."""
    problems = []
    for channel in session.scalars(select(Channel)).all():
        duty = session.get(LedgerAccount, channel.duty_account_id)
        stock = session.get(LedgerAccount, channel.stock_account_id)
        if duty is None or stock is None:
            continue
        sold = session.scalar(
            select(func.coalesce(func.sum(Order.count), 0)).where(
                Order.channel_id == channel.id, Order.status.in_(("credited", "refunded"))
            )
        )
        refunded = session.scalar(
            select(func.coalesce(func.sum(Order.refunded_count), 0)).where(
                Order.channel_id == channel.id
            )
        )
        held = duty.credits_posted - duty.debits_posted
        if held != (int(sold or 0) - int(refunded or 0)) * FACE_VALUE_RUPIAH:
            problems.append(
                f"channel {channel.name}: duty Rp{held} for {sold} stamps sold"
                f" and {refunded} refunded"
            )
    return problems
