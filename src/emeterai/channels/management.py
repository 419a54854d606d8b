"""Channels and their stock: create, rotate secrets, deposit, credit limit, automatic top-up.

Every channel, the issuer's own shop included, holds a stock account on the quota ledger
(`channel:<name>:stock`, flagged: it can never go negative). Quota reaches users only
through a channel's stock, so "stock = deposits + top-ups + refunds - sales" holds for
every channel and the audit checks it.

- A deposit (the channel paid the issuer in advance) moves quota supply -> stock and pays
  back outstanding credit first.
- When a sale needs more than the stock holds, the shortfall is topped up from supply in
  the same transaction, on credit: `credit_used` grows, within `credit_limit` when an
  order is taken. The issuer's shop (kind `shop`) has no limit: it sells what the issuer
  can issue. A payment already taken always credits, even past the limit (the money left
  the user's bank; the limit is between the issuer and the channel, never the user's).

Lock order, everywhere: the order row, then the channel row, then ledger accounts in
ascending id order. The channel row lock guards `credit_used` and the stock decisions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emeterai.channels.keys import add_webhook_secret, issue_api_key
from emeterai.channels.models import (
    CHANNEL_KINDS,
    Channel,
    ChannelApiKey,
    ChannelWebhookSecret,
)
from emeterai.config import Settings
from emeterai.errors import ChannelExists, ChannelNotFound, InvalidAmount, InvalidChannel
from emeterai.ledger import (
    LEDGER_QUOTA,
    LEDGER_RUPIAH,
    LedgerAccount,
    Move,
    open_account,
    transfer,
)
from emeterai.ledger.models import Transfer
from emeterai.quota import check_reference, issuer_supply

FACE_VALUE_RUPIAH = 10_000
FEE_RUPIAH_MAX = 1_000_000
CREDIT_LIMIT_MAX = 100_000_000
DEPOSIT_COUNT_MAX = 100_000_000
ORDER_TTL_S_DEFAULT = 3600
REFUND_FEE_RUPIAH_DEFAULT = 6_500  # the interbank transfer cost the 2024 policy deducted
OVERLAP_S_MAX = 30 * 86_400
SHOP_NAME = "emeterai-shop"
# FOR NO KEY UPDATE on PostgreSQL, not FOR UPDATE: inserting a row that references a
# channel or an order (a nonce, an event, an order) takes FOR KEY SHARE on it, and FOR
# UPDATE would wait for those holders while they wait for us, a deadlock.
NO_KEY_UPDATE: dict[str, Any] = {"key_share": True}
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,58}[a-z0-9])?$")


@dataclass(frozen=True)
class CreatedChannel:
    channel: Channel
    api_key: str  # shown once
    webhook_secret: str  # shown once

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.channel.id,
            "api_key": self.api_key,
            "webhook_secret": self.webhook_secret,
        }


@dataclass(frozen=True)
class Stock:
    channel: str
    kind: str
    stock: int
    credit_limit: int | None  # None: unlimited (the issuer's shop)
    credit_used: int

    @property
    def can_sell(self) -> int | None:
        if self.credit_limit is None:
            return None
        return self.stock + max(0, self.credit_limit - self.credit_used)

    def as_dict(self) -> dict[str, object]:
        return {
            "channel": self.channel,
            "kind": self.kind,
            "stock": self.stock,
            "credit_limit": self.credit_limit,
            "credit_used": self.credit_used,
            "can_sell": self.can_sell,
        }


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidChannel("a channel name is 1 to 60 of a-z, 0-9 and '-', e.g. pos-indonesia")
    return name


def _check_bounded(value: int, maximum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidChannel(f"{what} must be a whole number from 0 to {maximum}")
    return value


def create_channel(
    session: Session,
    settings: Settings,
    name: str,
    *,
    kind: str,
    now: datetime,
    fee_rupiah: int = 0,
    refund_fee_rupiah: int = REFUND_FEE_RUPIAH_DEFAULT,
    credit_limit: int = 0,
    order_ttl_s: int = ORDER_TTL_S_DEFAULT,
) -> CreatedChannel:
    check_name(name)
    if kind not in CHANNEL_KINDS:
        raise InvalidChannel(f"the kind must be one of {', '.join(CHANNEL_KINDS)}")
    _check_bounded(fee_rupiah, FEE_RUPIAH_MAX, "the fee")
    _check_bounded(refund_fee_rupiah, FEE_RUPIAH_MAX, "the refund fee")
    _check_bounded(credit_limit, CREDIT_LIMIT_MAX, "the credit limit")
    if isinstance(order_ttl_s, bool) or not 60 <= order_ttl_s <= 7 * 86_400:
        raise InvalidChannel("the order expiry must be from 60 s to 7 days")
    if session.scalars(select(Channel.id).where(Channel.name == name)).first() is not None:
        raise ChannelExists(f"a channel named {name} already exists")

    def account(suffix: str, ledger: int, kind: str, flagged: bool) -> LedgerAccount:
        return open_account(
            session,
            code=f"channel:{name}:{suffix}",
            ledger=ledger,
            kind=kind,
            now=now,
            debits_must_not_exceed_credits=flagged,
        )

    channel = Channel(
        name=name,
        kind=kind,
        fee_rupiah=fee_rupiah,
        refund_fee_rupiah=refund_fee_rupiah,
        credit_limit=credit_limit,
        credit_used=0,
        order_ttl_s=order_ttl_s,
        stock_account_id=account("stock", LEDGER_QUOTA, "channel_stock", True).id,
        # What the channel took from users for the issuer: debited by payments.
        collected_account_id=account("collected", LEDGER_RUPIAH, "channel_collected", False).id,
        # Flagged: a refund can never give back more duty or fees than were paid.
        duty_account_id=account("duty", LEDGER_RUPIAH, "channel_duty", True).id,
        fees_account_id=account("fees", LEDGER_RUPIAH, "channel_fees", True).id,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(channel)
    except IntegrityError as error:
        raise ChannelExists(f"a channel named {name} already exists") from error
    issued = issue_api_key(session, channel.id, now=now)
    secret = add_webhook_secret(session, settings, channel.id, now=now)
    return CreatedChannel(channel=channel, api_key=issued.api_key, webhook_secret=secret)


def channel_by_name(session: Session, name: str, *, lock: bool = False) -> Channel:
    query = select(Channel).where(Channel.name == name[:60])
    if lock:
        query = query.with_for_update(key_share=True).execution_options(populate_existing=True)
    channel = session.scalars(query).first()
    if channel is None:
        raise ChannelNotFound(f"no channel named {name[:60]}")
    return channel


def lock_channel(session: Session, channel_id: int) -> Channel:
    channel = session.get(
        Channel, channel_id, with_for_update=NO_KEY_UPDATE, populate_existing=True
    )
    if channel is None:
        raise ChannelNotFound(f"no channel {channel_id}")
    return channel


def list_channels(session: Session) -> list[Channel]:
    return list(session.scalars(select(Channel).order_by(Channel.name).limit(1000)).all())


def shop_channel(session: Session, settings: Settings, *, now: datetime) -> Channel:
    """The issuer's own shop: the first channel of kind `shop`, created on first use."""
    shop = session.scalars(
        select(Channel).where(Channel.kind == "shop").order_by(Channel.id).limit(1)
    ).first()
    if shop is not None:
        return shop
    try:
        # Its key and secret are not shown: the shop's payment side rotates them to read.
        return create_channel(session, settings, SHOP_NAME, kind="shop", now=now).channel
    except ChannelExists:
        return channel_by_name(session, SHOP_NAME)


@dataclass(frozen=True)
class Rotated:
    webhook_secret: str
    api_key: str | None
    old_valid_until: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "webhook_secret": self.webhook_secret,
            "api_key": self.api_key,
            "old_valid_until": self.old_valid_until.isoformat(),
        }


def rotate_secrets(
    session: Session,
    settings: Settings,
    name: str,
    *,
    now: datetime,
    overlap_s: int,
    api_key: bool,
) -> Rotated:
    """A new webhook secret (and API key); the old ones stay valid for `overlap_s`."""
    if isinstance(overlap_s, bool) or not 0 <= overlap_s <= OVERLAP_S_MAX:
        raise InvalidChannel(f"the overlap must be from 0 to {OVERLAP_S_MAX} seconds")
    channel = channel_by_name(session, name, lock=True)
    until = now + timedelta(seconds=overlap_s)
    live_secret = (ChannelWebhookSecret.channel_id == channel.id) & (
        ChannelWebhookSecret.expires_at.is_(None) | (ChannelWebhookSecret.expires_at > until)
    )
    session.execute(update(ChannelWebhookSecret).where(live_secret).values(expires_at=until))
    secret = add_webhook_secret(session, settings, channel.id, now=now)
    new_key = None
    if api_key:
        live_key = (ChannelApiKey.channel_id == channel.id) & (
            ChannelApiKey.expires_at.is_(None) | (ChannelApiKey.expires_at > until)
        )
        session.execute(update(ChannelApiKey).where(live_key).values(expires_at=until))
        new_key = issue_api_key(session, channel.id, now=now).api_key
    return Rotated(webhook_secret=secret, api_key=new_key, old_valid_until=until)


def set_credit_limit(session: Session, name: str, credit_limit: int) -> Channel:
    _check_bounded(credit_limit, CREDIT_LIMIT_MAX, "the credit limit")
    channel = channel_by_name(session, name, lock=True)
    channel.credit_limit = credit_limit
    session.flush()
    return channel


def _stock_available(session: Session, channel: Channel) -> int:
    account = session.get(LedgerAccount, channel.stock_account_id, populate_existing=True)
    if account is None:
        raise ChannelNotFound(f"channel {channel.name} has no stock account")
    return account.credits_posted - account.debits_posted - account.debits_pending


def deposit(session: Session, name: str, count: int, *, reference: str, now: datetime) -> Stock:
    """The channel paid the issuer for `count` stamps: supply -> stock, idempotent on
    `reference`. Outstanding credit is paid back first."""
    if isinstance(count, bool) or not 1 <= count <= DEPOSIT_COUNT_MAX:
        raise InvalidAmount(f"a deposit is 1 to {DEPOSIT_COUNT_MAX} stamps")
    channel = channel_by_name(session, name, lock=True)
    key = f"channel-deposit:{channel.id}:{check_reference(reference)}"
    seen = session.scalars(select(Transfer.id).where(Transfer.idempotency_key == key)).first()
    supply = issuer_supply(session, now=now)
    transfer(
        session,
        debit_account_id=supply.id,
        credit_account_id=channel.stock_account_id,
        amount=count,
        now=now,
        idempotency_key=key,
        memo=f"deposit {reference}",
    )
    if seen is None:
        channel.credit_used -= min(channel.credit_used, count)
    session.flush()
    return stock_of(session, channel)


def stock_of(session: Session, channel: Channel) -> Stock:
    return Stock(
        channel=channel.name,
        kind=channel.kind,
        stock=_stock_available(session, channel),
        credit_limit=None if channel.kind == "shop" else channel.credit_limit,
        credit_used=channel.credit_used,
    )


def check_can_sell(session: Session, channel: Channel, count: int) -> None:
    """Refuse an order the channel could not cover; the shop can always sell."""
    from emeterai.errors import ChannelStockExhausted

    if channel.kind == "shop":
        return
    can_sell = stock_of(session, channel).can_sell
    if can_sell is not None and count > can_sell:
        raise ChannelStockExhausted(
            f"channel {channel.name} can sell {can_sell} more stamps now", available=can_sell
        )


def stock_topup(
    session: Session, channel: Channel, count: int, *, key: str, now: datetime
) -> Move | None:
    """The move from supply that tops the stock up to cover `count`, if it falls short.

    The caller holds the channel row lock and makes the move in the same transaction.
    Idempotent on `key` (derived from the sale)."""
    shortfall = count - _stock_available(session, channel)
    if shortfall <= 0:
        return None
    if channel.kind != "shop":
        channel.credit_used += shortfall
    return Move(
        debit_account_id=issuer_supply(session, now=now).id,
        credit_account_id=channel.stock_account_id,
        amount=shortfall,
        idempotency_key=f"channel-topup:{key}",
        memo=f"automatic top-up for {key}"[:200],
    )
