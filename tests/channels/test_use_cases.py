"""The sales side through its use cases, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emeterai.audit import run_audit
from emeterai.channels import signing
from emeterai.channels.management import deposit, rotate_secrets, set_credit_limit, stock_of
from emeterai.channels.models import Channel, Rejection
from emeterai.channels.orders import get_order, list_orders, view_of
from emeterai.channels.payments import handle_webhook
from emeterai.channels.reconciliation import parse_settlement, reconcile
from emeterai.channels.refunds import refund_order
from emeterai.channels.reports import duty_report
from emeterai.db import transaction
from emeterai.errors import (
    BadSignature,
    ChannelStockExhausted,
    EmeteraiError,
    NothingToRefund,
    SettlementFileInvalid,
)
from emeterai.pdf import Placement
from emeterai.quota import quota_balance
from emeterai.stamping.service import Reservation, StampRequest, complete_stamp, reserve_stamp
from tests.channels.conftest import Shop
from tests.conftest import FixedClock


def confirm(shop: Shop, secret: str, order_id: str, amount: int, reference: str, **kw: object):  # type: ignore[no-untyped-def]
    body = json.dumps(
        {"order_id": order_id, "payment_reference": reference, "amount_rupiah": amount}
    ).encode()
    stamp = int(shop.runtime.clock.now().timestamp()) + int(kw.pop("skew", 0))  # type: ignore[call-overload]
    return handle_webhook(
        shop.runtime.sessions,
        shop.runtime.settings,
        shop.runtime.clock,
        body=body,
        timestamp_header=str(stamp),
        signature_header=signing.sign(secret, stamp, body),
        **kw,  # type: ignore[arg-type]
    )


def available(shop: Shop) -> int:
    with transaction(shop.runtime.sessions) as session:
        return quota_balance(session, shop.buyer_id, now=shop.runtime.clock.now()).available


def audit_ok(shop: Shop) -> None:
    with transaction(shop.runtime.sessions) as session:
        report = run_audit(session)
    assert report.ok, report.findings


def test_payment_credits_once_and_late_payment_still_credits(shop: Shop, clock: FixedClock) -> None:
    secret = shop.shop.webhook_secret
    order_id, amount = shop.order(3)
    assert amount == 3 * 10_500
    first = confirm(shop, secret, order_id, amount, "bank-1")
    again = confirm(shop, secret, order_id, amount, "bank-1", skew=-1)
    assert (first.status, first.duplicate, again.status, again.duplicate) == (
        "credited",
        False,
        "credited",
        True,
    )
    assert available(shop) == 3

    late_id, late_amount = shop.order(1)
    clock.advance(3600 + 5)
    with transaction(shop.runtime.sessions) as session:
        views, _ = list_orders(session, now=clock.now(), account_id=shop.buyer_id)
    assert {view.order_id: view.status for view in views}[late_id] == "expired"
    late = confirm(shop, secret, late_id, late_amount, "bank-2")
    assert late.status == "credited" and late.late
    with transaction(shop.runtime.sessions) as session:
        events = [kind for _, kind, _ in view_of(session, get_order(session, late_id)).timeline]
    assert events == ["created", "expired", "paid_after_expiry", "credited"]
    assert available(shop) == 4
    audit_ok(shop)


def test_rejections_credit_nothing_and_are_recorded(shop: Shop, clock: FixedClock) -> None:
    secret = shop.shop.webhook_secret
    order_id, amount = shop.order(2)
    other_id, other_amount = shop.order(1, channel=shop.distributor)
    attempts: list[tuple[str, dict[str, object]]] = [
        ("BAD_SIGNATURE", {"secret": "whsec_wrong"}),
        ("STALE_TIMESTAMP", {"skew": -301}),
        ("WRONG_AMOUNT", {"amount": amount - 1}),
        ("UNKNOWN_ORDER", {"order_id": "ord_nosuchorder"}),
        ("ORDER_OF_ANOTHER_CHANNEL", {"order_id": other_id, "amount": other_amount, "key": 1}),
    ]
    for code, change in attempts:
        with pytest.raises(EmeteraiError) as refused:
            confirm(
                shop,
                str(change.get("secret", secret)),
                str(change.get("order_id", order_id)),
                int(change.get("amount", amount)),  # type: ignore[call-overload]
                f"ref-{code}",
                skew=change.get("skew", 0),
                channel_id=shop.shop.channel.id if "key" in change else None,
            )
        assert refused.value.code == code
    # A replay: the very same signed message twice.
    body = json.dumps(
        {"order_id": order_id, "payment_reference": "ref-ok", "amount_rupiah": amount}
    ).encode()
    stamp = int(clock.now().timestamp())
    headers = {
        "timestamp_header": str(stamp),
        "signature_header": signing.sign(secret, stamp, body),
    }
    runtime = shop.runtime
    handle_webhook(runtime.sessions, runtime.settings, runtime.clock, body=body, **headers)
    with pytest.raises(EmeteraiError) as replayed:
        handle_webhook(runtime.sessions, runtime.settings, runtime.clock, body=body, **headers)
    assert replayed.value.code == "REPLAYED_CONFIRMATION"
    assert available(shop) == 2  # only the one good confirmation
    with transaction(runtime.sessions) as session:
        codes = set(session.scalars(select(Rejection.code)).all())
    assert codes == {code for code, _ in attempts} | {"REPLAYED_CONFIRMATION"}
    audit_ok(shop)


def test_rotation_keeps_the_old_secret_for_the_overlap(shop: Shop, clock: FixedClock) -> None:
    old = shop.shop.webhook_secret
    with transaction(shop.runtime.sessions) as session:
        rotated = rotate_secrets(
            session, shop.runtime.settings, "toko", now=clock.now(), overlap_s=60, api_key=True
        )
    first, amount = shop.order(1)
    assert confirm(shop, old, first, amount, "r-1").status == "credited"
    clock.advance(61)
    second, amount = shop.order(1)
    with pytest.raises(BadSignature):
        confirm(shop, old, second, amount, "r-2")
    assert confirm(shop, rotated.webhook_secret, second, amount, "r-2").status == "credited"


def test_top_up_within_credit_limit_and_deposits_repay_it(shop: Shop) -> None:
    runtime, secret = shop.runtime, shop.distributor.webhook_secret
    with transaction(runtime.sessions) as session:
        deposit(session, "pos-indonesia", 2, reference="dep-1", now=runtime.clock.now())
    with pytest.raises(ChannelStockExhausted):
        shop.order(6, channel=shop.distributor)
    order_id, amount = shop.order(4, channel=shop.distributor)  # 2 in stock + 2 on credit
    assert confirm(shop, secret, order_id, amount, "d-1").status == "credited"

    def stock() -> tuple[int, int]:
        with transaction(runtime.sessions) as session:
            held = stock_of(session, session.get(Channel, shop.distributor.channel.id))  # type: ignore[arg-type]
            return held.stock, held.credit_used

    assert stock() == (0, 2)
    with transaction(runtime.sessions) as session:
        deposit(session, "pos-indonesia", 5, reference="dep-2", now=runtime.clock.now())
        deposit(session, "pos-indonesia", 5, reference="dep-2", now=runtime.clock.now())
    assert stock() == (5, 0)
    with transaction(runtime.sessions) as session:
        set_credit_limit(session, "pos-indonesia", 0)
    with pytest.raises(ChannelStockExhausted):
        shop.order(6, channel=shop.distributor)
    # The issuer's shop never runs out while the issuer can issue.
    big, amount = shop.order(5_000)
    assert confirm(shop, shop.shop.webhook_secret, big, amount, "s-1").status == "credited"
    audit_ok(shop)


def _stamp_without_signing(
    session: Session, account_id: int, index: int, now: datetime, *, post: bool
) -> None:
    """Use one quota the way stamping does (reservation, serial, stamp record), without
    pyHanko: the refund only cares about the ledger and the registry."""
    request = StampRequest(
        account_id=account_id,
        document=f"%PDF-1.7 document {index}".encode(),
        placement=Placement(page=1, x_pt=72, y_pt=72),
    )
    held = reserve_stamp(session, request, request_sha256=f"{index:064x}", now=now, ttl_s=60)
    assert isinstance(held, Reservation)
    if post:
        complete_stamp(
            session,
            held,
            request,
            document=f"%PDF-1.7 stamped {index}".encode(),
            blob_key=f"{index:064x}",
            signed_at=now,
            now=now,
        )


def test_refund_returns_only_the_unused_part(shop: Shop, clock: FixedClock) -> None:
    runtime = shop.runtime
    order_id, amount = shop.order(5)
    confirm(shop, shop.shop.webhook_secret, order_id, amount, "pay-5")
    with transaction(runtime.sessions) as session:  # two stamps used
        for index in range(2):
            _stamp_without_signing(session, shop.buyer_id, index, clock.now(), post=True)
    with transaction(runtime.sessions) as session:
        refund = refund_order(session, order_id, now=clock.now())
        again = refund_order(session, order_id, now=clock.now())
    assert (refund.refunded_count, refund.kept_count) == (3, 2)
    assert refund.refund_rupiah == 3 * 10_500 - 6_500
    assert again.replayed and again.refund_rupiah == refund.refund_rupiah
    assert available(shop) == 0
    with transaction(runtime.sessions) as session:
        assert quota_balance(session, shop.buyer_id, now=clock.now()).used == 2
    used_up, amount = shop.order(1)
    confirm(shop, shop.shop.webhook_secret, used_up, amount, "pay-1")
    with transaction(runtime.sessions) as session:
        _stamp_without_signing(session, shop.buyer_id, 9, clock.now(), post=False)
    with pytest.raises(NothingToRefund), transaction(runtime.sessions) as session:
        refund_order(session, used_up, now=clock.now())  # its stamp is in use (reserved)
    audit_ok(shop)

    day = clock.now().date()
    with transaction(runtime.sessions) as session:
        by_channel = duty_report(session, day, day, by="channel")
        by_day = duty_report(session, day - timedelta(days=1), day, by="day")
    toko = next(row for row in by_channel.rows if row.key == "toko")
    assert (toko.stamps_sold, toko.stamps_refunded) == (6, 3)
    assert toko.duty_owed_rupiah == 3 * 10_000 and toko.fees_rupiah == 3 * 500
    assert toko.refund_fees_rupiah == 6_500
    assert by_day.total.stamps_used == 2 and by_day.rows[0].stamps_sold == 0
    assert by_day.total.duty_owed_rupiah == by_channel.total.duty_owed_rupiah
    assert isinstance(by_day.start, date)


def test_reconciliation_repairs_a_gap_once(shop: Shop, clock: FixedClock) -> None:
    runtime, secret = shop.runtime, shop.shop.webhook_secret
    credited, amount = shop.order(1)
    confirm(shop, secret, credited, amount, "settled-1")
    gap, gap_amount = shop.order(2)  # the channel took the money; its callback never came
    unsettled, unsettled_amount = shop.order(1)
    confirm(shop, secret, unsettled, unsettled_amount, "not-in-file")
    when = clock.now().isoformat()
    settlement = (
        "payment_reference,order_id,amount_rupiah,settled_at\n"
        f"settled-1,{credited},{amount},{when}\n"
        f"settled-2,{gap},{gap_amount},{when}\n"
        f"settled-3,ord_unknown,10000,{when}\n"
    ).encode()
    lines = parse_settlement(settlement)

    def run(apply: bool) -> dict[str, list[str]]:
        with transaction(runtime.sessions) as session:
            report = reconcile(session, "toko", lines, apply=apply, now=clock.now())
        kinds: dict[str, list[str]] = {}
        for finding in report.findings:
            kinds.setdefault(finding.kind + ("+" if finding.repaired else ""), []).append(
                finding.payment_reference
            )
        return kinds

    dry = run(False)
    assert dry == {
        "settled_not_credited": ["settled-2"],
        "unknown_reference": ["settled-3"],
        "credited_not_settled": ["not-in-file"],
    }
    assert available(shop) == 2
    assert run(True)["settled_not_credited+"] == ["settled-2"]
    assert available(shop) == 4
    second = run(True)
    assert "settled_not_credited" not in second and "settled_not_credited+" not in second
    assert available(shop) == 4
    audit_ok(shop)
    with pytest.raises(SettlementFileInvalid):
        parse_settlement(b"reference,order,amount\n")
    with transaction(runtime.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Rejection)) == 0
