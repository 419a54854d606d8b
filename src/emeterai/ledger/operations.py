"""Ledger operations. Each takes the caller's session and never commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from emeterai.errors import (
    ExceedsCredits,
    IdempotencyConflict,
    InvalidAmount,
    LedgerAccountNotFound,
    ReservationExpired,
    TransferConflict,
)
from emeterai.ledger.models import LedgerAccount, Transfer

AMOUNT_MAX = 10**15  # far above any real quota or rupiah amount, far below BIGINT
SETTLEMENT_KINDS = ("post", "void", "expire")


@dataclass(frozen=True)
class Balance:
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int

    @property
    def available(self) -> int:
        """What the account may still spend: pending debits count as spent."""
        return self.credits_posted - self.debits_posted - self.debits_pending


def open_account(
    session: Session,
    *,
    code: str,
    ledger: int,
    kind: str,
    now: datetime,
    owner_account_id: int | None = None,
    debits_must_not_exceed_credits: bool = True,
) -> LedgerAccount:
    """Return the account named `code`, creating it on first use (idempotent)."""
    existing = session.scalars(select(LedgerAccount).where(LedgerAccount.code == code)).first()
    if existing is not None:
        return existing
    account = LedgerAccount(
        ledger=ledger,
        code=code,
        kind=kind,
        owner_account_id=owner_account_id,
        debits_must_not_exceed_credits=debits_must_not_exceed_credits,
        debits_pending=0,
        debits_posted=0,
        credits_pending=0,
        credits_posted=0,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(account)
    except IntegrityError:
        # A concurrent transaction created it first; theirs is the account.
        return session.scalars(select(LedgerAccount).where(LedgerAccount.code == code)).one()
    return account


def lock_accounts(session: Session, account_ids: Sequence[int]) -> dict[int, LedgerAccount]:
    """Lock accounts in ascending id order, so two transfers can never deadlock."""
    ids = sorted(set(account_ids))
    rows = session.scalars(
        select(LedgerAccount)
        .where(LedgerAccount.id.in_(ids))
        .order_by(LedgerAccount.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    found = {row.id: row for row in rows}
    for account_id in ids:
        if account_id not in found:
            raise LedgerAccountNotFound(f"ledger account {account_id} does not exist")
    return found


def _check_amount(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= AMOUNT_MAX:
        raise InvalidAmount(f"amount must be an integer in 1..{AMOUNT_MAX}, not {amount!r}")


def _check_debit_allowed(account: LedgerAccount, amount: int) -> None:
    if not account.debits_must_not_exceed_credits:
        return
    if account.debits_pending + account.debits_posted + amount > account.credits_posted:
        raise ExceedsCredits(
            f"account {account.code} holds {account.credits_posted - account.debits_posted}"
            f" with {account.debits_pending} reserved; {amount} more does not fit",
            available=account.credits_posted - account.debits_posted - account.debits_pending,
        )


def _replay(
    session: Session, key: str, *, kind: str, debit_id: int, credit_id: int, amount: int
) -> Transfer | None:
    existing = session.scalars(select(Transfer).where(Transfer.idempotency_key == key)).first()
    if existing is None:
        return None
    same = (existing.kind, existing.debit_account_id, existing.credit_account_id, existing.amount)
    if same != (kind, debit_id, credit_id, amount):
        raise IdempotencyConflict(f"idempotency key {key!r} was used for a different transfer")
    return existing


def _open(
    session: Session,
    *,
    kind: str,
    debit_id: int,
    credit_id: int,
    amount: int,
    now: datetime,
    expires_at: datetime | None,
    idempotency_key: str | None,
    memo: str,
) -> Transfer:
    """Insert a `single` (posted at once) or `pending` transfer, or replay its twin."""
    _check_amount(amount)
    if debit_id == credit_id:
        raise InvalidAmount("a transfer needs two distinct accounts")
    accounts = lock_accounts(session, [debit_id, credit_id])
    debit, credit = accounts[debit_id], accounts[credit_id]
    if debit.ledger != credit.ledger:
        raise InvalidAmount("a transfer cannot cross ledgers")
    if idempotency_key is not None:
        # Checked after the lock: a concurrent twin has committed by now, and we see it.
        replay = _replay(
            session,
            idempotency_key,
            kind=kind,
            debit_id=debit_id,
            credit_id=credit_id,
            amount=amount,
        )
        if replay is not None:
            return replay
    _check_debit_allowed(debit, amount)
    if kind == "pending":
        debit.debits_pending += amount
        credit.credits_pending += amount
    else:
        debit.debits_posted += amount
        credit.credits_posted += amount
    row = Transfer(
        ledger=debit.ledger,
        kind=kind,
        debit_account_id=debit.id,
        credit_account_id=credit.id,
        amount=amount,
        idempotency_key=idempotency_key,
        expires_at=expires_at,
        memo=memo[:200],
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def transfer(
    session: Session,
    *,
    debit_account_id: int,
    credit_account_id: int,
    amount: int,
    now: datetime,
    idempotency_key: str | None = None,
    memo: str = "",
) -> Transfer:
    """Move `amount` at once. With an idempotency key, a repeat returns the first transfer."""
    return _open(
        session,
        kind="single",
        debit_id=debit_account_id,
        credit_id=credit_account_id,
        amount=amount,
        now=now,
        expires_at=None,
        idempotency_key=idempotency_key,
        memo=memo,
    )


def reserve(
    session: Session,
    *,
    debit_account_id: int,
    credit_account_id: int,
    amount: int,
    now: datetime,
    expires_at: datetime,
    idempotency_key: str | None = None,
    memo: str = "",
) -> Transfer:
    """Create a pending transfer: the amount is held, counted as spent, until settled."""
    if expires_at <= now:
        raise InvalidAmount("a reservation must expire in the future")
    return _open(
        session,
        kind="pending",
        debit_id=debit_account_id,
        credit_id=credit_account_id,
        amount=amount,
        now=now,
        expires_at=expires_at,
        idempotency_key=idempotency_key,
        memo=memo,
    )


def settlement_of(session: Session, pending_id: int) -> Transfer | None:
    return session.scalars(select(Transfer).where(Transfer.pending_id == pending_id)).first()


def _settle(session: Session, pending_id: int, kind: str, now: datetime) -> Transfer:
    pending = session.get(Transfer, pending_id)
    if pending is None or pending.kind != "pending":
        raise TransferConflict(f"transfer {pending_id} is not a pending transfer")
    accounts = lock_accounts(session, [pending.debit_account_id, pending.credit_account_id])
    # Re-read under the lock: a concurrent settlement has committed by now if it won.
    settled = settlement_of(session, pending_id)
    if settled is not None:
        if settled.kind == kind:
            return settled
        raise TransferConflict(
            f"reservation {pending_id} was already settled by {settled.kind}", settled=settled.kind
        )
    if kind == "post" and pending.expires_at is not None and pending.expires_at <= now:
        raise ReservationExpired(f"reservation {pending_id} expired before it was posted")
    debit = accounts[pending.debit_account_id]
    credit = accounts[pending.credit_account_id]
    debit.debits_pending -= pending.amount
    credit.credits_pending -= pending.amount
    if kind == "post":
        debit.debits_posted += pending.amount
        credit.credits_posted += pending.amount
    row = Transfer(
        ledger=pending.ledger,
        kind=kind,
        debit_account_id=pending.debit_account_id,
        credit_account_id=pending.credit_account_id,
        amount=pending.amount,
        pending_id=pending.id,
        memo=pending.memo,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def post_pending(session: Session, pending_id: int, *, now: datetime) -> Transfer:
    """Make a reservation final. Refused once it has expired, even if no sweep ran yet."""
    return _settle(session, pending_id, "post", now)


def void_pending(session: Session, pending_id: int, *, now: datetime) -> Transfer:
    return _settle(session, pending_id, "void", now)


def unsettled_due(
    session: Session, *, now: datetime, limit: int, debit_account_id: int | None = None
) -> list[int]:
    settlement = aliased(Transfer)
    query = (
        select(Transfer.id)
        .outerjoin(settlement, settlement.pending_id == Transfer.id)
        .where(Transfer.kind == "pending", Transfer.expires_at <= now, settlement.id.is_(None))
        .order_by(Transfer.expires_at)
        .limit(limit)
    )
    if debit_account_id is not None:
        query = query.where(Transfer.debit_account_id == debit_account_id)
    return list(session.scalars(query).all())


def expire_due(
    session: Session, *, now: datetime, limit: int = 1000, debit_account_id: int | None = None
) -> list[int]:
    """Expire reservations past their time; returns the ids of the pending transfers.

    Every account involved is locked first, in one id-ordered statement: two sweepers
    (one per server process) settling overlapping lists can then never deadlock.
    """
    due = unsettled_due(session, now=now, limit=limit, debit_account_id=debit_account_id)
    if not due:
        return []
    pairs = session.execute(
        select(Transfer.debit_account_id, Transfer.credit_account_id).where(Transfer.id.in_(due))
    ).all()
    lock_accounts(session, [account for pair in pairs for account in pair])
    expired: list[int] = []
    for pending_id in due:
        try:
            _settle(session, pending_id, "expire", now)
        except TransferConflict:
            continue  # posted or voided concurrently: nothing left to expire
        expired.append(pending_id)
    return expired


def balance_of(session: Session, account_id: int) -> Balance:
    account = session.get(LedgerAccount, account_id)
    if account is None:
        raise LedgerAccountNotFound(f"ledger account {account_id} does not exist")
    return Balance(
        debits_pending=account.debits_pending,
        debits_posted=account.debits_posted,
        credits_pending=account.credits_pending,
        credits_posted=account.credits_posted,
    )
