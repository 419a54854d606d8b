"""Reconciliation: a channel's settlement file against the ledger.

The file is CSV with the header `payment_reference,order_id,amount_rupiah,settled_at`.
Each settled payment is matched with the payment the webhook recorded. Findings:
- `settled_not_credited`: the channel took the money and we never credited it; with
  `apply` it is credited now, through the same use case as the webhook, so exactly once;
- `unknown_reference`: the order does not exist or is another channel's;
- `wrong_amount`: the amount differs from the order's (or from the recorded payment's);
- `paid_under_other_reference`: the order was credited under another payment reference;
- `credited_not_settled`: we credited a payment the file does not list (received between
  three days before the file's first settlement and its last one).

Running it again changes nothing: a repaired payment is then simply matched.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from emeterai.channels.management import channel_by_name
from emeterai.channels.models import Order, Payment
from emeterai.channels.payments import (
    AMOUNT_RUPIAH_MAX,
    Confirmation,
    check_payment_reference,
    record_payment,
)
from emeterai.errors import MalformedConfirmation, PaymentRejected, SettlementFileInvalid

HEADER = ("payment_reference", "order_id", "amount_rupiah", "settled_at")
FILE_BYTES_MAX = 32 * 1024 * 1024
ROWS_MAX = 200_000
LOOKBACK = timedelta(days=3)


@dataclass(frozen=True)
class SettledPayment:
    line: int
    payment_reference: str
    order_id: str
    amount_rupiah: int
    settled_at: datetime


@dataclass(frozen=True)
class Finding:
    kind: str
    payment_reference: str
    order_id: str
    amount_rupiah: int | None
    expected_rupiah: int | None
    repaired: bool
    detail: str


@dataclass
class Report:
    channel: str
    applied: bool
    lines: int
    matched: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def gaps(self) -> int:
        return sum(1 for finding in self.findings if not finding.repaired)

    def as_dict(self) -> dict[str, object]:
        return {
            "channel": self.channel,
            "applied": self.applied,
            "lines": self.lines,
            "matched": self.matched,
            "repaired": sum(1 for finding in self.findings if finding.repaired),
            "findings": [asdict(finding) for finding in self.findings],
        }

    def as_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        names = list(Finding.__dataclass_fields__)
        writer.writerow(names)
        for finding in self.findings:
            writer.writerow([getattr(finding, name) for name in names])
        return buffer.getvalue()


def _when(text: str, line: int) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as error:
        raise SettlementFileInvalid(
            f"line {line}: settled_at {text[:40]!r} is not ISO 8601"
        ) from error
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_settlement(data: bytes) -> list[SettledPayment]:
    if len(data) > FILE_BYTES_MAX:
        raise SettlementFileInvalid(f"the file is larger than {FILE_BYTES_MAX} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SettlementFileInvalid("the file is not UTF-8") from error
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if header is None or tuple(cell.strip() for cell in header) != HEADER:
        raise SettlementFileInvalid(f"the header must be exactly {','.join(HEADER)}")
    settled: list[SettledPayment] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(settled) >= ROWS_MAX:
            raise SettlementFileInvalid(f"the file has more than {ROWS_MAX} rows")
        if len(row) != len(HEADER):
            raise SettlementFileInvalid(f"line {number}: {len(row)} fields, not {len(HEADER)}")
        reference, order_id, amount, when = (cell.strip() for cell in row)
        try:
            check_payment_reference(reference)
        except MalformedConfirmation as error:
            raise SettlementFileInvalid(f"line {number}: {error.detail}") from error
        if reference in seen:
            raise SettlementFileInvalid(f"line {number}: payment {reference} is listed twice")
        seen.add(reference)
        if not amount.isdigit() or not 0 < int(amount) <= AMOUNT_RUPIAH_MAX:
            raise SettlementFileInvalid(f"line {number}: amount_rupiah must be whole rupiah")
        if not 1 <= len(order_id) <= 40:
            raise SettlementFileInvalid(f"line {number}: order_id is not an order id")
        settled.append(
            SettledPayment(
                line=number,
                payment_reference=reference,
                order_id=order_id,
                amount_rupiah=int(amount),
                settled_at=_when(when, number),
            )
        )
    return settled


def reconcile(
    session: Session,
    channel_name: str,
    settled: list[SettledPayment],
    *,
    apply: bool,
    now: datetime,
) -> Report:
    channel = channel_by_name(session, channel_name)
    report = Report(channel=channel.name, applied=apply, lines=len(settled))

    def finding(kind: str, line: SettledPayment, expected: int | None, detail: str) -> None:
        report.findings.append(
            Finding(
                kind=kind,
                payment_reference=line.payment_reference,
                order_id=line.order_id,
                amount_rupiah=line.amount_rupiah,
                expected_rupiah=expected,
                repaired=False,
                detail=detail,
            )
        )

    for line in settled:
        payment = session.scalars(
            select(Payment).where(
                Payment.channel_id == channel.id,
                Payment.payment_reference == line.payment_reference,
            )
        ).first()
        if payment is not None:
            if payment.order_id != line.order_id:
                finding(
                    "unknown_reference",
                    line,
                    None,
                    f"we recorded this reference for order {payment.order_id}",
                )
            elif payment.amount_rupiah != line.amount_rupiah:
                finding("wrong_amount", line, payment.amount_rupiah, "differs from the payment")
            else:
                report.matched += 1
            continue
        order = session.get(Order, line.order_id)
        if order is None or order.channel_id != channel.id:
            finding("unknown_reference", line, None, "no such order for this channel")
            continue
        if line.amount_rupiah != order.amount_rupiah:
            finding("wrong_amount", line, order.amount_rupiah, "differs from the order's price")
            continue
        other = session.scalars(select(Payment).where(Payment.order_id == order.id)).first()
        if other is not None:
            finding(
                "paid_under_other_reference",
                line,
                order.amount_rupiah,
                f"order credited under {other.payment_reference}: the user paid twice?",
            )
            continue
        repaired = False
        detail = "settled by the channel but never credited"
        if apply:
            try:
                record_payment(
                    session,
                    channel.id,
                    Confirmation(
                        order_id=line.order_id,
                        payment_reference=line.payment_reference,
                        amount_rupiah=line.amount_rupiah,
                    ),
                    source="reconcile",
                    now=now,
                )
                repaired, detail = True, "credited now by reconciliation"
            except PaymentRejected as error:
                detail = f"not repaired: {error.code}"
        report.findings.append(
            Finding(
                kind="settled_not_credited",
                payment_reference=line.payment_reference,
                order_id=line.order_id,
                amount_rupiah=line.amount_rupiah,
                expected_rupiah=order.amount_rupiah,
                repaired=repaired,
                detail=detail,
            )
        )
    if settled:
        start = min(line.settled_at for line in settled) - LOOKBACK
        end = max(line.settled_at for line in settled)
        listed = {line.payment_reference for line in settled}
        for payment in session.scalars(
            select(Payment)
            .where(
                Payment.channel_id == channel.id,
                Payment.received_at >= start,
                Payment.received_at <= end,
            )
            .order_by(Payment.id)
        ).yield_per(1000):
            if payment.payment_reference not in listed:
                report.findings.append(
                    Finding(
                        kind="credited_not_settled",
                        payment_reference=payment.payment_reference,
                        order_id=payment.order_id,
                        amount_rupiah=None,
                        expected_rupiah=payment.amount_rupiah,
                        repaired=False,
                        detail="credited, but the channel's settlement does not list it",
                    )
                )
    return report
