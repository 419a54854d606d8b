"""The duty report: stamps sold, refunded and used, the duty owed and the fees, by day or
by channel. Every figure is summed from ledger transfers, so it is the ledger's to the
rupiah. Days are UTC calendar days; a period is at most 366 days.

- duty owed: what the channels' duty accounts hold for the period (Rp10,000 a stamp sold,
  less refunds): the face value collected for the tax authority;
- duty on stamps used: Rp10,000 for each stamp posted (used) in the period.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from emeterai.channels.management import FACE_VALUE_RUPIAH
from emeterai.channels.models import Channel
from emeterai.errors import InvalidDateRange
from emeterai.ledger.models import LedgerAccount, Transfer

PERIOD_DAYS_MAX = 366
POSTED = ("single", "post")


@dataclass(frozen=True)
class DutyRow:
    key: str  # a day (YYYY-MM-DD) or a channel name, or "total"
    stamps_sold: int
    stamps_refunded: int
    stamps_used: int | None  # not attributable to a channel: quota is fungible
    duty_owed_rupiah: int
    fees_rupiah: int
    refund_fees_rupiah: int

    @property
    def consistent(self) -> bool:
        return (
            self.duty_owed_rupiah == (self.stamps_sold - self.stamps_refunded) * FACE_VALUE_RUPIAH
        )


@dataclass(frozen=True)
class DutyReport:
    start: date
    end: date
    by: str
    rows: tuple[DutyRow, ...]
    total: DutyRow

    def as_dict(self) -> dict[str, object]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "by": self.by,
            "face_value_rupiah": FACE_VALUE_RUPIAH,
            "rows": [asdict(row) for row in self.rows],
            "total": {
                **asdict(self.total),
                "duty_on_used_rupiah": (self.total.stamps_used or 0) * FACE_VALUE_RUPIAH,
            },
        }

    def as_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        names = list(DutyRow.__dataclass_fields__)
        writer.writerow(["day" if self.by == "day" else "channel", *names[1:]])
        for row in (*self.rows, self.total):
            writer.writerow(["" if value is None else value for value in asdict(row).values()])
        return buffer.getvalue()


def parse_period(start: str, end: str) -> tuple[date, date]:
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as error:
        raise InvalidDateRange("dates are YYYY-MM-DD") from error
    if last < first or (last - first).days >= PERIOD_DAYS_MAX:
        raise InvalidDateRange(f"--from must not be after --to, at most {PERIOD_DAYS_MAX} days")
    return first, last


def _figures(
    session: Session, channels: list[Channel], start: datetime, end: datetime
) -> tuple[dict[int, list[int]], int]:
    """Per channel id: [sold, refunded, duty, fees, refund fees]; and stamps used."""
    debit_id, credit_id = Transfer.debit_account_id, Transfer.credit_account_id
    stock = {c.stock_account_id: c.id for c in channels}
    duty = {c.duty_account_id: c.id for c in channels}
    fees = {c.fees_account_id: c.id for c in channels}
    collected = {c.collected_account_id: c.id for c in channels}
    debit_kind = aliased(LedgerAccount)
    out: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])

    def add(index: int, sums: dict[int, int], owners: dict[int, int], sign: int = 1) -> None:
        for account_id, total in sums.items():
            if account_id in owners:
                out[owners[account_id]][index] += sign * total

    window = {"start": start, "end": end}
    credit_acct, debit_acct = aliased(LedgerAccount), debit_kind
    sold = session.execute(
        select(debit_id, func.sum(Transfer.amount))
        .join(credit_acct, credit_acct.id == credit_id)
        .where(
            Transfer.kind.in_(POSTED),
            Transfer.created_at >= start,
            Transfer.created_at < end,
            debit_id.in_(stock),
            credit_acct.kind == "user_quota",
        )
        .group_by(debit_id)
    ).all()
    add(0, {int(k): int(v) for k, v in sold}, stock)
    refunded = session.execute(
        select(credit_id, func.sum(Transfer.amount))
        .join(debit_acct, debit_acct.id == debit_id)
        .where(
            Transfer.kind.in_(POSTED),
            Transfer.created_at >= start,
            Transfer.created_at < end,
            credit_id.in_(stock),
            debit_acct.kind == "user_quota",
        )
        .group_by(credit_id)
    ).all()
    add(1, {int(k): int(v) for k, v in refunded}, stock)
    for index, owners in ((2, duty), (3, fees)):
        into = _plain_sums(session, credit_id, list(owners), **window)
        back = _plain_sums(session, debit_id, list(owners), **window)
        add(index, into, owners)
        add(index, back, owners, -1)
    retained = session.execute(
        select(debit_id, func.sum(Transfer.amount))
        .join(credit_acct, credit_acct.id == credit_id)
        .where(
            Transfer.kind.in_(POSTED),
            Transfer.created_at >= start,
            Transfer.created_at < end,
            debit_id.in_(collected),
            credit_acct.kind == "issuer_refund_fees",
        )
        .group_by(debit_id)
    ).all()
    add(4, {int(k): int(v) for k, v in retained}, collected)
    used = session.scalar(
        select(func.coalesce(func.sum(Transfer.amount), 0))
        .join(credit_acct, credit_acct.id == credit_id)
        .where(
            Transfer.kind == "post",
            Transfer.created_at >= start,
            Transfer.created_at < end,
            credit_acct.kind == "user_quota_used",
        )
    )
    return out, int(used or 0)


def _plain_sums(
    session: Session, column: object, ids: list[int], *, start: datetime, end: datetime
) -> dict[int, int]:
    if not ids:
        return {}
    rows = session.execute(
        select(column, func.sum(Transfer.amount))  # type: ignore[call-overload]
        .where(
            Transfer.kind.in_(POSTED),
            Transfer.created_at >= start,
            Transfer.created_at < end,
            column.in_(ids),  # type: ignore[attr-defined]
        )
        .group_by(column)
    ).all()
    return {int(key): int(total) for key, total in rows}


def _row(key: str, figures: list[int], used: int | None) -> DutyRow:
    return DutyRow(
        key=key,
        stamps_sold=figures[0],
        stamps_refunded=figures[1],
        stamps_used=used,
        duty_owed_rupiah=figures[2],
        fees_rupiah=figures[3],
        refund_fees_rupiah=figures[4],
    )


def duty_report(session: Session, start: date, end: date, *, by: str = "day") -> DutyReport:
    if by not in ("day", "channel"):
        raise InvalidDateRange("--by is day or channel")
    channels = list(session.scalars(select(Channel).order_by(Channel.name)).all())
    begin = datetime.combine(start, time(), tzinfo=UTC)
    finish = datetime.combine(end + timedelta(days=1), time(), tzinfo=UTC)
    rows: list[DutyRow] = []
    if by == "channel":
        figures, used = _figures(session, channels, begin, finish)
        for channel in channels:
            rows.append(_row(channel.name, figures.get(channel.id, [0] * 5), None))
    else:
        used = 0
        day = start
        while day <= end:
            low = datetime.combine(day, time(), tzinfo=UTC)
            per_channel, day_used = _figures(session, channels, low, low + timedelta(days=1))
            totals = [sum(values[i] for values in per_channel.values()) for i in range(5)]
            rows.append(_row(day.isoformat(), totals, day_used))
            used += day_used
            day += timedelta(days=1)
    total = [
        sum(getattr(row, name) for row in rows)
        for name in (
            "stamps_sold",
            "stamps_refunded",
            "duty_owed_rupiah",
            "fees_rupiah",
            "refund_fees_rupiah",
        )
    ]
    return DutyReport(
        start=start, end=end, by=by, rows=tuple(rows), total=_row("total", total, used)
    )
