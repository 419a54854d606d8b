"""Ledger operations. Each takes the caller's session and never commits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from weakref import WeakKeyDictionary

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, SessionTransaction, aliased

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

# The accounts each open transaction (or savepoint) has locked. A lock lasts until its
# transaction ends; a savepoint's entries go with it, since rolling back to a savepoint
# may release what was locked inside it. The objects are held here because a session
# keeps only weak references to them.
_LOCKED: WeakKeyDictionary[SessionTransaction, dict[int, LedgerAccount]] = WeakKeyDictionary()


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


@dataclass(frozen=True)
class AccountSpec:
    """A ledger account to open: `code` is its stable, unique name."""

    code: str
    ledger: int
    kind: str
    owner_account_id: int | None = None
    debits_must_not_exceed_credits: bool = True


def open_accounts(
    session: Session, specs: Sequence[AccountSpec], *, now: datetime, lock: bool = False
) -> list[LedgerAccount]:
    """The accounts named by `specs`, in order, creating those that do not exist yet
    (idempotent). One read finds them all, and one savepoint creates the missing ones.

    With `lock`, that read locks them too, as `lock_accounts` would (a row this
    transaction creates is its own until it commits)."""
    codes = [spec.code for spec in specs]
    query = select(LedgerAccount).where(LedgerAccount.code.in_(codes))
    if lock:
        query = _locking(query)
    found = {row.code: row for row in session.scalars(query)}
    missing = [spec for spec in specs if spec.code not in found]
    if missing:
        made = {
            spec.code: LedgerAccount(
                ledger=spec.ledger,
                code=spec.code,
                kind=spec.kind,
                owner_account_id=spec.owner_account_id,
                debits_must_not_exceed_credits=spec.debits_must_not_exceed_credits,
                debits_pending=0,
                debits_posted=0,
                credits_pending=0,
                credits_posted=0,
                created_at=now,
            )
            for spec in missing
        }
        try:
            with session.begin_nested():
                session.add_all(made.values())
            found.update(made)
        except IntegrityError:
            # A concurrent transaction created one first; theirs are the accounts.
            found = {row.code: row for row in session.scalars(query)}
    if lock:
        _remember_locks(session, found.values())
    return [found[code] for code in codes]


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
    """The account named `code`, created on first use (idempotent)."""
    spec = AccountSpec(code, ledger, kind, owner_account_id, debits_must_not_exceed_credits)
    return open_accounts(session, [spec], now=now)[0]


def _locking(query: Select[LedgerAccount]) -> Select[LedgerAccount]:
    """The query's accounts locked in ascending id order, and read afresh under the lock."""
    return (
        query.order_by(LedgerAccount.id).with_for_update().execution_options(populate_existing=True)
    )


def _innermost(session: Session) -> SessionTransaction | None:
    return session.get_nested_transaction() or session.get_transaction()


def _held_locks(session: Session) -> dict[int, LedgerAccount]:
    """The accounts the open transaction and its open savepoints have locked."""
    held: dict[int, LedgerAccount] = {}
    step = _innermost(session)
    while step is not None:
        held.update(_LOCKED.get(step, {}))
        step = step.parent
    return held


def _remember_locks(
    session: Session, accounts: Iterable[LedgerAccount]
) -> dict[int, LedgerAccount]:
    fresh = {account.id: account for account in accounts}
    current = _innermost(session)
    if current is not None:
        _LOCKED.setdefault(current, {}).update(fresh)
    return fresh


def lock_accounts(session: Session, account_ids: Sequence[int]) -> dict[int, LedgerAccount]:
    """Lock accounts in ascending id order, so two transfers can never deadlock.

    An account this transaction has already locked is not asked for again: nobody else
    can have changed it since, so the session's copy is current."""
    ids = sorted(set(account_ids))
    held = _held_locks(session)
    missing = [account_id for account_id in ids if account_id not in held]
    if missing:
        rows = session.scalars(
            _locking(select(LedgerAccount).where(LedgerAccount.id.in_(missing)))
        ).all()
        held.update(_remember_locks(session, rows))
    for account_id in ids:
        if account_id not in held:
            raise LedgerAccountNotFound(f"ledger account {account_id} does not exist")
    return {account_id: held[account_id] for account_id in ids}


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


@dataclass(frozen=True)
class Move:
    """One transfer of a batch (`transfers`)."""

    debit_account_id: int
    credit_account_id: int
    amount: int
    idempotency_key: str | None = None
    memo: str = ""


def _replays(session: Session, moves: Sequence[Move], kind: str) -> dict[str, Transfer]:
    """The transfers already made under the moves' keys; a key used for another transfer
    is refused."""
    keys = [move.idempotency_key for move in moves if move.idempotency_key is not None]
    if len(set(keys)) != len(keys):
        raise IdempotencyConflict("one batch names an idempotency key twice")
    if not keys:
        return {}
    found: dict[str, Transfer] = {
        row.idempotency_key: row
        for row in session.scalars(select(Transfer).where(Transfer.idempotency_key.in_(keys)))
        if row.idempotency_key is not None
    }
    for move in moves:
        existing = found.get(move.idempotency_key or "")
        if existing is None:
            continue
        same = (existing.kind, existing.debit_account_id, existing.credit_account_id)
        asked = (kind, move.debit_account_id, move.credit_account_id)
        if (same, existing.amount) != (asked, move.amount):
            raise IdempotencyConflict(
                f"idempotency key {move.idempotency_key!r} was used for a different transfer"
            )
    return found


def _open(
    session: Session,
    moves: Sequence[Move],
    *,
    kind: str,
    now: datetime,
    expires_at: datetime | None,
) -> list[Transfer]:
    """Insert `single` (posted at once) or `pending` transfers, or replay their twins.

    All their accounts are locked in one statement, every key is looked up in one, and the
    rows go out in one flush. Moves apply in order, so one may spend what an earlier one
    credited; if any is refused, the caller's transaction rolls the whole batch back."""
    for move in moves:
        _check_amount(move.amount)
        if move.debit_account_id == move.credit_account_id:
            raise InvalidAmount("a transfer needs two distinct accounts")
    accounts = lock_accounts(
        session, [id_ for move in moves for id_ in (move.debit_account_id, move.credit_account_id)]
    )
    # Checked after the lock: a concurrent twin has committed by now, and we see it.
    earlier = _replays(session, moves, kind)
    rows: list[Transfer] = []
    for move in moves:
        debit, credit = accounts[move.debit_account_id], accounts[move.credit_account_id]
        if debit.ledger != credit.ledger:
            raise InvalidAmount("a transfer cannot cross ledgers")
        replay = earlier.get(move.idempotency_key or "")
        if replay is not None:
            rows.append(replay)
            continue
        _check_debit_allowed(debit, move.amount)
        if kind == "pending":
            debit.debits_pending += move.amount
            credit.credits_pending += move.amount
        else:
            debit.debits_posted += move.amount
            credit.credits_posted += move.amount
        row = Transfer(
            ledger=debit.ledger,
            kind=kind,
            debit_account_id=debit.id,
            credit_account_id=credit.id,
            amount=move.amount,
            idempotency_key=move.idempotency_key,
            expires_at=expires_at,
            memo=move.memo[:200],
            created_at=now,
        )
        session.add(row)
        rows.append(row)
    session.flush()
    return rows


def transfers(session: Session, moves: Sequence[Move], *, now: datetime) -> list[Transfer]:
    """Several moves at once, each posted at once, as one unit: see `_open`."""
    return _open(session, moves, kind="single", now=now, expires_at=None)


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
    move = Move(debit_account_id, credit_account_id, amount, idempotency_key, memo)
    return transfers(session, [move], now=now)[0]


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
    move = Move(debit_account_id, credit_account_id, amount, idempotency_key, memo)
    return _open(session, [move], kind="pending", now=now, expires_at=expires_at)[0]


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
    if debit_account_id is not None:
        account = session.get(LedgerAccount, debit_account_id)
        if account is not None and account.debits_pending == 0:
            # Nothing is reserved on it, so nothing can be due: skip the search, which
            # reads every reservation whose time has passed, settled or not.
            return []
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
