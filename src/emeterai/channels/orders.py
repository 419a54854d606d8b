"""Orders: a number of stamps at face value plus the channel's fee, and their timeline."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emeterai.channels.management import FACE_VALUE_RUPIAH, check_can_sell
from emeterai.channels.models import Channel, Order, OrderEvent
from emeterai.errors import IdempotencyConflict, InvalidAmount, OrderNotFound
from emeterai.quota import check_reference

ORDER_COUNT_MAX = 10_000
PAGE_SIZE_MAX = 100
EXPIRE_BATCH_MAX = 500
EVENTS_PER_ORDER_MAX = 50
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def new_order_id() -> str:
    return "ord_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))  # 130 bits


def add_event(session: Session, order_id: str, kind: str, now: datetime, detail: str = "") -> None:
    session.add(OrderEvent(order_id=order_id, kind=kind, detail=detail[:300], created_at=now))


@dataclass(frozen=True)
class OrderView:
    order_id: str
    channel: str
    count: int
    unit_price_rupiah: int
    amount_rupiah: int
    status: str
    refunded_count: int
    created_at: datetime
    expires_at: datetime
    credited_at: datetime | None
    timeline: tuple[tuple[datetime, str, str], ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "order_id": self.order_id,
            "channel": self.channel,
            "count": self.count,
            "unit_price_rupiah": self.unit_price_rupiah,
            "amount_rupiah": self.amount_rupiah,
            "status": self.status,
            "refunded_count": self.refunded_count,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "credited_at": self.credited_at.isoformat() if self.credited_at else None,
            "timeline": [
                {"at": at.isoformat(), "event": kind, "detail": detail}
                for at, kind, detail in self.timeline
            ],
        }


def view_of(session: Session, order: Order) -> OrderView:
    channel = session.get(Channel, order.channel_id)
    events = session.execute(
        select(OrderEvent.created_at, OrderEvent.kind, OrderEvent.detail)
        .where(OrderEvent.order_id == order.id)
        .order_by(OrderEvent.id)
        .limit(EVENTS_PER_ORDER_MAX)
    ).all()
    return OrderView(
        order_id=order.id,
        channel=channel.name if channel else "?",
        count=order.count,
        unit_price_rupiah=order.unit_price_rupiah,
        amount_rupiah=order.amount_rupiah,
        status=order.status,
        refunded_count=order.refunded_count,
        created_at=order.created_at,
        expires_at=order.expires_at,
        credited_at=order.credited_at,
        timeline=tuple((at, kind, detail) for at, kind, detail in events),
    )


def create_order(
    session: Session,
    channel: Channel,
    account_id: int,
    count: int,
    *,
    now: datetime,
    request_key: str | None = None,
) -> Order:
    """An order awaiting payment. With `request_key`, a retry returns the same order."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= ORDER_COUNT_MAX:
        raise InvalidAmount(f"an order is for 1 to {ORDER_COUNT_MAX} stamps")
    if request_key is not None:
        check_reference(request_key)
        earlier = session.scalars(
            select(Order).where(Order.channel_id == channel.id, Order.request_key == request_key)
        ).first()
        if earlier is not None:
            if (earlier.account_id, earlier.count) != (account_id, count):
                raise IdempotencyConflict("this Idempotency-Key was used for another order")
            return earlier
    check_can_sell(session, channel, count)
    unit_price = FACE_VALUE_RUPIAH + channel.fee_rupiah
    order = Order(
        id=new_order_id(),
        channel_id=channel.id,
        account_id=account_id,
        count=count,
        unit_price_rupiah=unit_price,
        amount_rupiah=count * unit_price,
        status="awaiting_payment",
        request_key=request_key,
        refunded_count=0,
        created_at=now,
        expires_at=now + timedelta(seconds=channel.order_ttl_s),
    )
    session.add(order)
    try:
        session.flush()
    except IntegrityError as error:
        # Only a concurrent twin can collide; the caller's transaction rolls back whole.
        raise IdempotencyConflict("a concurrent request with this key made the order") from error
    add_event(
        session,
        order.id,
        "created",
        now,
        f"{count} stamp(s) at Rp{unit_price} each, Rp{order.amount_rupiah} in total",
    )
    session.flush()
    return order


def expire_orders(
    session: Session,
    *,
    now: datetime,
    channel_id: int | None = None,
    account_id: int | None = None,
) -> int:
    """Mark unpaid orders past their time as expired (a late payment still credits)."""
    query = select(Order.id).where(Order.status == "awaiting_payment", Order.expires_at <= now)
    if channel_id is not None:
        query = query.where(Order.channel_id == channel_id)
    if account_id is not None:
        query = query.where(Order.account_id == account_id)
    expired = 0
    for order_id in session.scalars(query.limit(EXPIRE_BATCH_MAX)).all():
        # Guarded by the status: a payment crediting this order concurrently wins.
        changed = session.execute(
            update(Order)
            .where(Order.id == order_id, Order.status == "awaiting_payment")
            .values(status="expired")
        )
        if getattr(changed, "rowcount", 0) == 1:
            add_event(session, order_id, "expired", now, "no payment arrived in time")
            expired += 1
    session.flush()
    return expired


def get_order(
    session: Session,
    order_id: str,
    *,
    account_id: int | None = None,
    channel_id: int | None = None,
) -> Order:
    """One order, scoped to its owner: another owner's order is simply not found."""
    order = session.get(Order, order_id[:40])
    if (
        order is None
        or (account_id is not None and order.account_id != account_id)
        or (channel_id is not None and order.channel_id != channel_id)
    ):
        raise OrderNotFound(f"no order {order_id[:40]}")
    return order


def list_orders(
    session: Session,
    *,
    now: datetime,
    account_id: int | None = None,
    channel_id: int | None = None,
    limit: int = 50,
    before: str | None = None,
) -> tuple[list[OrderView], str | None]:
    """Newest first, scoped to a user or a channel; page with `before` (an order id)."""
    if account_id is None and channel_id is None:
        raise OrderNotFound("orders are listed for their owner only")
    limit = max(1, min(limit, PAGE_SIZE_MAX))
    expire_orders(session, now=now, channel_id=channel_id, account_id=account_id)
    query = select(Order)
    if account_id is not None:
        query = query.where(Order.account_id == account_id)
    if channel_id is not None:
        query = query.where(Order.channel_id == channel_id)
    if before is not None:
        cursor = get_order(session, before, account_id=account_id, channel_id=channel_id)
        query = query.where(
            (Order.created_at < cursor.created_at)
            | ((Order.created_at == cursor.created_at) & (Order.id < cursor.id))
        )
    rows = session.scalars(
        query.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit + 1)
    ).all()
    views = [view_of(session, row) for row in rows[:limit]]
    return views, (rows[limit - 1].id if len(rows) > limit else None)
