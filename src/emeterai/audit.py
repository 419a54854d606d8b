"""`emeterai audit`: every ledger and registry invariant of DESIGN.md, checked from the rows.

Each check is a query that finds violations; a healthy system returns none. The
database constraints make most of these impossible already: the audit proves it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from emeterai.channels import audit as channels_audit
from emeterai.jobs import audit as jobs_audit
from emeterai.ledger.models import LedgerAccount, Transfer
from emeterai.serials import Serial, is_well_formed
from emeterai.stamping.models import Stamp

SAMPLE_MAX = 5  # offending rows named per broken invariant


@dataclass(frozen=True)
class Finding:
    invariant: str
    detail: str


@dataclass(frozen=True)
class AuditReport:
    checked: tuple[str, ...]
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings


def _ledger_balances(session: Session) -> list[str]:
    rows = session.execute(
        select(
            LedgerAccount.ledger,
            func.sum(LedgerAccount.debits_posted),
            func.sum(LedgerAccount.credits_posted),
            func.sum(LedgerAccount.debits_pending),
            func.sum(LedgerAccount.credits_pending),
        ).group_by(LedgerAccount.ledger)
    ).all()
    return [
        f"ledger {ledger}: debits posted {dp} != credits posted {cp}, or pending {dpe} != {cpe}"
        for ledger, dp, cp, dpe, cpe in rows
        if dp != cp or dpe != cpe
    ]


def _account_totals_match_transfers(session: Session) -> list[str]:
    """Each account's running balances equal what its transfers add up to."""
    settlement = aliased(Transfer)
    posted_kinds = Transfer.kind.in_(("single", "post"))
    unsettled_pending = (Transfer.kind == "pending") & settlement.id.is_(None)
    expected: dict[int, list[int]] = {}
    for side, column in (
        ("debit", Transfer.debit_account_id),
        ("credit", Transfer.credit_account_id),
    ):
        posted = session.execute(
            select(column, func.sum(Transfer.amount)).where(posted_kinds).group_by(column)
        ).all()
        pending = session.execute(
            select(column, func.sum(Transfer.amount))
            .outerjoin(settlement, settlement.pending_id == Transfer.id)
            .where(unsettled_pending)
            .group_by(column)
        ).all()
        offset = 0 if side == "debit" else 2
        for account_id, total in posted:
            expected.setdefault(account_id, [0, 0, 0, 0])[offset] = int(total)
        for account_id, total in pending:
            expected.setdefault(account_id, [0, 0, 0, 0])[offset + 1] = int(total)
    problems = []
    for account in session.scalars(select(LedgerAccount)).all():
        actual = [
            account.debits_posted,
            account.debits_pending,
            account.credits_posted,
            account.credits_pending,
        ]
        want = expected.get(account.id, [0, 0, 0, 0])
        if actual != want:
            problems.append(
                f"account {account.code}: balances (debits posted, pending; credits posted,"
                f" pending) are {actual} but its transfers add up to {want}"
            )
    return problems


def _flagged_within_credits(session: Session) -> list[str]:
    rows = session.scalars(
        select(LedgerAccount).where(
            LedgerAccount.debits_must_not_exceed_credits,
            LedgerAccount.debits_pending + LedgerAccount.debits_posted
            > LedgerAccount.credits_posted,
        )
    ).all()
    return [f"account {row.code} is overdrawn" for row in rows]


def _settlements_well_formed(session: Session) -> list[str]:
    pending = aliased(Transfer)
    rows = session.execute(
        select(Transfer.id, Transfer.kind, pending.kind, Transfer.amount, pending.amount)
        .join(pending, pending.id == Transfer.pending_id)
        .where(
            (pending.kind != "pending")
            | (pending.amount != Transfer.amount)
            | (pending.debit_account_id != Transfer.debit_account_id)
            | (pending.credit_account_id != Transfer.credit_account_id)
        )
    ).all()
    duplicates = session.execute(
        select(Transfer.pending_id, func.count())
        .where(Transfer.pending_id.is_not(None))
        .group_by(Transfer.pending_id)
        .having(func.count() > 1)
    ).all()
    return [f"settlement {row[0]} ({row[1]}) does not match its reservation" for row in rows] + [
        f"reservation {pending_id} settled {count} times" for pending_id, count in duplicates
    ]


def _consumptions_serials_stamps(session: Session) -> list[str]:
    """Posted consumptions = serials USED (or later REVOKED) = stamp records."""
    settlement = aliased(Transfer)
    problems = []
    consumptions = session.scalar(
        select(func.count())
        .select_from(Serial)
        .join(settlement, settlement.pending_id == Serial.reservation_transfer_id)
        .where(settlement.kind == "post")
    )
    used = session.scalar(
        select(func.count()).select_from(Serial).where(Serial.state.in_(("used", "revoked")))
    )
    stamps = session.scalar(select(func.count()).select_from(Stamp))
    if not consumptions == used == stamps:
        problems.append(
            f"posted consumptions {consumptions}, used serials {used}, stamp records {stamps}"
        )
    mismatched = session.execute(
        select(Serial.serial, Serial.state, settlement.kind, Stamp.id)
        .outerjoin(settlement, settlement.pending_id == Serial.reservation_transfer_id)
        .outerjoin(Stamp, Stamp.serial == Serial.serial)
        .where(
            (
                (Serial.state.in_(("used", "revoked")))
                & ((settlement.kind.is_(None)) | (settlement.kind != "post") | Stamp.id.is_(None))
            )
            | ((Serial.state == "reserved") & settlement.id.is_not(None))
            | (
                (Serial.state == "voided")
                & (settlement.kind.is_(None) | (settlement.kind == "post"))
            )
        )
        .limit(SAMPLE_MAX)
    ).all()
    problems += [
        f"serial {serial} is {state} but its reservation is {kind or 'unsettled'}"
        f" and it has {'a' if stamp_id else 'no'} stamp record"
        for serial, state, kind, stamp_id in mismatched
    ]
    wrong_post = session.execute(
        select(Stamp.serial)
        .join(Serial, Serial.serial == Stamp.serial)
        .join(settlement, settlement.id == Stamp.post_transfer_id)
        .where(settlement.pending_id != Serial.reservation_transfer_id)
        .limit(SAMPLE_MAX)
    ).all()
    problems += [f"stamp {row[0]} names another reservation's posting" for row in wrong_post]
    return problems


def _consumptions_per_owner(session: Session) -> list[str]:
    """The same equality per user, and only stamp postings ever reach a 'used' account.

    The global counts could balance while one user is charged for another's stamps.
    """
    settlement = aliased(Transfer)
    pending = aliased(Transfer)
    used_account = aliased(LedgerAccount)
    debit_account = aliased(LedgerAccount)
    problems = []
    stray = session.execute(
        select(Transfer.id, Transfer.kind, used_account.code)
        .join(used_account, used_account.id == Transfer.credit_account_id)
        .where(used_account.kind == "user_quota_used", Transfer.kind == "single")
        .limit(SAMPLE_MAX)
    ).all()
    problems += [
        f"transfer {tid} ({kind}) reaches {code} without a stamp" for tid, kind, code in stray
    ]
    used_totals: dict[int | None, int] = dict(
        session.execute(
            select(LedgerAccount.owner_account_id, LedgerAccount.credits_posted).where(
                LedgerAccount.kind == "user_quota_used"
            )
        ).all()
    )
    serials_used: dict[int | None, int] = dict(
        session.execute(
            select(Serial.account_id, func.count())
            .where(Serial.state.in_(("used", "revoked")))
            .group_by(Serial.account_id)
        ).all()
    )
    stamps_made: dict[int | None, int] = dict(
        session.execute(select(Stamp.account_id, func.count()).group_by(Stamp.account_id)).all()
    )
    for owner in sorted(set(used_totals) | set(serials_used) | set(stamps_made), key=str):
        figures = (used_totals.get(owner, 0), serials_used.get(owner, 0), stamps_made.get(owner, 0))
        if len(set(figures)) != 1:
            used, serials, stamps = figures
            problems.append(
                f"account {owner}: used {used}, used serials {serials}, stamps {stamps}"
            )
            if len(problems) >= SAMPLE_MAX:
                return problems
    mismatched_owner = session.execute(
        select(Stamp.serial)
        .join(Serial, Serial.serial == Stamp.serial)
        .join(settlement, settlement.id == Stamp.post_transfer_id)
        .join(pending, pending.id == settlement.pending_id)
        .join(debit_account, debit_account.id == pending.debit_account_id)
        .where(
            (Stamp.account_id != Serial.account_id)
            | (debit_account.owner_account_id != Stamp.account_id)
            | (settlement.kind != "post")
        )
        .limit(SAMPLE_MAX)
    ).all()
    unposted = session.execute(
        select(Stamp.serial)
        .outerjoin(settlement, settlement.id == Stamp.post_transfer_id)
        .where(settlement.pending_id.is_(None))
        .limit(SAMPLE_MAX)
    ).all()
    problems += [f"stamp {row[0]} is charged to someone else" for row in mismatched_owner]
    problems += [f"stamp {row[0]} names no posted reservation" for row in unposted]
    return problems


def _serials_well_formed(session: Session) -> list[str]:
    problems = []
    for serial in session.scalars(select(Serial.serial)).yield_per(10_000):
        if not is_well_formed(serial):
            problems.append(f"serial {serial} fails its check code")
            if len(problems) >= SAMPLE_MAX:
                break
    return problems


CHECKS: dict[str, Callable[[Session], list[str]]] = {
    "ledger-balances": _ledger_balances,
    "account-balances-match-transfers": _account_totals_match_transfers,
    "flagged-accounts-within-credits": _flagged_within_credits,
    "reservations-settled-at-most-once": _settlements_well_formed,
    "consumptions-equal-used-serials-equal-stamps": _consumptions_serials_stamps,
    "consumptions-match-per-owner": _consumptions_per_owner,
    "serials-well-formed": _serials_well_formed,
    "paid-orders-equal-credited-orders": channels_audit.paid_orders_are_credited,
    "payments-credited-exactly-once": channels_audit.payments_credited_once,
    "channel-stock-equals-deposits-minus-sales": channels_audit.channel_stock_matches_movements,
    "channel-duty-equals-stamps-sold": channels_audit.channel_duty_matches_sales,
    "bulk-documents-stamped-exactly-once": jobs_audit.documents_stamped_exactly_once,
    "bulk-job-counts-match-documents": jobs_audit.job_counts_match_documents,
}


def run_audit(session: Session) -> AuditReport:
    findings = []
    for name, check in CHECKS.items():
        findings += [
            Finding(invariant=name, detail=detail) for detail in check(session)[:SAMPLE_MAX]
        ]
    return AuditReport(checked=tuple(CHECKS), findings=tuple(findings))
