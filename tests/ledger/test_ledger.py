"""The ledger on both databases: double entry, at-most-once settlement, no overdraft."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emeterai.accounts import create_account
from emeterai.db import make_engine, make_sessions, transaction
from emeterai.errors import (
    ExceedsCredits,
    IdempotencyConflict,
    InvalidAmount,
    ReservationExpired,
    TransferConflict,
)
from emeterai.ledger import (
    AccountSpec,
    LedgerAccount,
    Move,
    Transfer,
    balance_of,
    expire_due,
    lock_accounts,
    open_account,
    open_accounts,
    post_pending,
    reserve,
    transfer,
    transfers,
    void_pending,
)
from emeterai.migrate import upgrade_database
from emeterai.quota import add_quota, issuer_supply, quota_accounts, quota_balance
from emeterai.runtime import Runtime
from tests.conftest import FixedClock


def _hold(
    session: Session, debit_id: int, credit_id: int, now: datetime, *, seconds: int = 60
) -> Transfer:
    """Reserve one unit from debit to credit for `seconds`."""
    return reserve(
        session,
        debit_account_id=debit_id,
        credit_account_id=credit_id,
        amount=1,
        now=now,
        expires_at=now + timedelta(seconds=seconds),
    )


def _user(runtime: Runtime, email: str = "a@example.id") -> int:
    with transaction(runtime.sessions) as session:
        return create_account(session, email, now=runtime.clock.now()).id


def test_operator_credit_is_idempotent_on_its_reference(runtime: Runtime) -> None:
    user = _user(runtime)
    now = runtime.clock.now()
    for _ in range(3):
        with transaction(runtime.sessions) as session:
            add_quota(session, user, 5, reference="ref-1", now=now)
    with transaction(runtime.sessions) as session:
        assert quota_balance(session, user, now=now).available == 5
        with pytest.raises(IdempotencyConflict):
            add_quota(session, user, 6, reference="ref-1", now=now)


def test_reserve_counts_as_spent_and_settles_once(runtime: Runtime, clock: FixedClock) -> None:
    user = _user(runtime)
    now = clock.now()
    with transaction(runtime.sessions) as session:
        add_quota(session, user, 2, reference="r", now=now)
        accounts = quota_accounts(session, user, now=now)
        quota_id, used_id = accounts.quota.id, accounts.used.id
        holds = [_hold(session, quota_id, used_id, now).id for _ in range(2)]
        with pytest.raises(ExceedsCredits):
            _hold(session, quota_id, used_id, now)
        assert balance_of(session, quota_id).available == 0
    with transaction(runtime.sessions) as session:
        first = post_pending(session, holds[0], now=now)
        assert post_pending(session, holds[0], now=now).id == first.id  # a repeat is the same
        with pytest.raises(TransferConflict):
            void_pending(session, holds[0], now=now)
        void_pending(session, holds[1], now=now)
        with pytest.raises(TransferConflict):
            post_pending(session, holds[1], now=now)
        balance = quota_balance(session, user, now=now)
    assert (balance.available, balance.reserved, balance.used) == (1, 0, 1)


def test_expired_reservation_returns_and_cannot_be_posted(
    runtime: Runtime, clock: FixedClock
) -> None:
    user = _user(runtime)
    now = clock.now()
    with transaction(runtime.sessions) as session:
        add_quota(session, user, 1, reference="r", now=now)
        accounts = quota_accounts(session, user, now=now)
        hold = _hold(session, accounts.quota.id, accounts.used.id, now, seconds=10).id
    clock.advance(11)
    with transaction(runtime.sessions) as session, pytest.raises(ReservationExpired):
        post_pending(session, hold, now=clock.now())
    with transaction(runtime.sessions) as session:
        assert expire_due(session, now=clock.now()) == [hold]
        assert expire_due(session, now=clock.now()) == []
        assert quota_balance(session, user, now=clock.now()).available == 1


def test_amounts_are_positive_integers(runtime: Runtime) -> None:
    now = runtime.clock.now()
    user = _user(runtime)
    with transaction(runtime.sessions) as session:
        supply = issuer_supply(session, now=now)
        accounts = quota_accounts(session, user, now=now)
        for amount in (0, -1, 1.5, True):
            with pytest.raises(InvalidAmount):
                transfer(
                    session,
                    debit_account_id=supply.id,
                    credit_account_id=accounts.quota.id,
                    amount=amount,  # type: ignore[arg-type]
                    now=now,
                )


def test_database_refuses_an_overdraft_that_python_did_not_catch(runtime: Runtime) -> None:
    """The CHECK constraint backs the Python check: a raw UPDATE cannot overdraw."""
    now = runtime.clock.now()
    user = _user(runtime)
    with transaction(runtime.sessions) as session:
        quota_id = quota_accounts(session, user, now=now).quota.id
    with pytest.raises(IntegrityError), transaction(runtime.sessions) as session:
        session.execute(
            update(LedgerAccount).where(LedgerAccount.id == quota_id).values(debits_posted=1)
        )


def test_database_refuses_a_second_settlement(runtime: Runtime) -> None:
    now = runtime.clock.now()
    user = _user(runtime)
    with transaction(runtime.sessions) as session:
        add_quota(session, user, 1, reference="r", now=now)
        accounts = quota_accounts(session, user, now=now)
        hold = _hold(session, accounts.quota.id, accounts.used.id, now)
        post_pending(session, hold.id, now=now)
    with pytest.raises(IntegrityError), transaction(runtime.sessions) as session:
        session.execute(
            text(
                "INSERT INTO ledger_transfers (ledger, kind, debit_account_id, credit_account_id,"
                " amount, pending_id, memo, created_at)"
                " VALUES (1, 'void', :d, :c, 1, :p, '', :now)"
            ),
            {"d": hold.debit_account_id, "c": hold.credit_account_id, "p": hold.id, "now": now},
        )


class _Statements:
    """Counts the SQL statements an engine runs, to check what a step asks the database."""

    def __init__(self, runtime: Runtime) -> None:
        self.count = 0
        event.listen(runtime.engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: object) -> None:
        self.count += 1

    def since(self, start: int) -> int:
        return self.count - start


def test_a_batch_applies_in_order_replays_and_refuses_a_reused_key(runtime: Runtime) -> None:
    now = runtime.clock.now()
    user = _user(runtime)
    with transaction(runtime.sessions) as session:
        supply = issuer_supply(session, now=now).id
        accounts = quota_accounts(session, user, now=now)
        quota, used = accounts.quota.id, accounts.used.id
    # The second move spends what the first one credits: moves apply in order.
    batch = [Move(supply, quota, 3, "in"), Move(quota, used, 2, "out", "spend")]
    with transaction(runtime.sessions) as session:
        first = [row.id for row in transfers(session, batch, now=now)]
    with transaction(runtime.sessions) as session:
        assert [row.id for row in transfers(session, batch, now=now)] == first
        assert balance_of(session, quota).available == 1
        assert session.get(Transfer, first[1]).memo == "spend"  # type: ignore[union-attr]
    for reused in ([Move(supply, quota, 4, "in")], [Move(supply, quota, 1, "x")] * 2):
        with pytest.raises(IdempotencyConflict), transaction(runtime.sessions) as session:
            transfers(session, reused, now=now)


def test_a_refused_move_takes_the_whole_batch_back(runtime: Runtime) -> None:
    now = runtime.clock.now()
    user = _user(runtime)
    with transaction(runtime.sessions) as session:
        supply = issuer_supply(session, now=now).id
        accounts = quota_accounts(session, user, now=now)
        quota, used = accounts.quota.id, accounts.used.id
    batch = [Move(supply, quota, 1), Move(quota, used, 2)]
    with pytest.raises(ExceedsCredits), transaction(runtime.sessions) as session:
        transfers(session, batch, now=now)
    with transaction(runtime.sessions) as session:
        assert balance_of(session, quota) == balance_of(session, used)  # both untouched
        assert balance_of(session, quota).credits_posted == 0


def test_an_account_is_locked_once_per_transaction(runtime: Runtime) -> None:
    now = runtime.clock.now()
    users = [_user(runtime, f"{name}@example.id") for name in ("a", "b")]
    with transaction(runtime.sessions) as session:
        a, b = (quota_accounts(session, user, now=now).quota.id for user in users)
    statements = _Statements(runtime)
    with transaction(runtime.sessions) as session:
        session.execute(text("SELECT 1"))  # BEGIN is a statement on SQLite only
        start = statements.count
        locked = lock_accounts(session, [a])
        assert statements.since(start) == 1
        start = statements.count
        assert lock_accounts(session, [b, a])[a] is locked[a]
        assert statements.since(start) == 1, "only b is asked for"
        start = statements.count
        lock_accounts(session, [a, b])
        assert statements.since(start) == 0
    with transaction(runtime.sessions) as session:
        session.execute(text("SELECT 1"))
        start = statements.count
        with pytest.raises(InvalidAmount), session.begin_nested():
            lock_accounts(session, [a])
            raise InvalidAmount("roll the savepoint back")
        lock_accounts(session, [a])  # a lock taken in a rolled-back savepoint may be gone
        assert statements.since(start) == 4  # savepoint, lock, rollback to it, lock
    with transaction(runtime.sessions) as session:  # a new transaction locks anew
        session.execute(text("SELECT 1"))
        start = statements.count
        lock_accounts(session, [a, b])
        assert statements.since(start) == 1


def test_the_expiry_search_is_skipped_when_nothing_is_reserved(
    runtime: Runtime, clock: FixedClock
) -> None:
    user = _user(runtime)
    now = clock.now()
    with transaction(runtime.sessions) as session:
        add_quota(session, user, 2, reference="r", now=now)
        accounts = quota_accounts(session, user, now=now)
        quota, used = accounts.quota.id, accounts.used.id
        post_pending(session, _hold(session, quota, used, now).id, now=now)
    statements = _Statements(runtime)
    with transaction(runtime.sessions) as session:
        lock_accounts(session, [quota])
        start = statements.count
        assert expire_due(session, now=now, debit_account_id=quota) == []
        assert statements.since(start) == 0
        hold = _hold(session, quota, used, now, seconds=10).id
    clock.advance(11)
    with transaction(runtime.sessions) as session:
        assert expire_due(session, now=clock.now(), debit_account_id=quota) == [hold]
        assert quota_balance(session, user, now=clock.now()).available == 1


def test_open_accounts_finds_or_creates_each_once(runtime: Runtime) -> None:
    now = runtime.clock.now()
    specs = [AccountSpec("test:x", 1, "test"), AccountSpec("test:y", 1, "test", None, False)]
    with transaction(runtime.sessions) as session:
        x = open_account(session, code="test:x", ledger=1, kind="test", now=now)
    with transaction(runtime.sessions) as session:
        found = open_accounts(session, specs, now=now)
        assert [account.code for account in found] == ["test:x", "test:y"]
        assert found[0].id == x.id
        assert not found[1].debits_must_not_exceed_credits
    with transaction(runtime.sessions) as session:
        assert [account.id for account in open_accounts(session, specs, now=now)] == [
            account.id for account in found
        ]


def test_parallel_reservations_never_overdraw_postgres(postgres_url: str) -> None:
    """20 threads race for 5 units on real PostgreSQL row locks: exactly 5 win."""
    upgrade_database(postgres_url)
    engine = make_engine(postgres_url, pool_size=20)
    sessions = make_sessions(engine)
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        user = create_account(session, "race@example.id", now=now).id
        add_quota(session, user, 5, reference="r", now=now)
        accounts = quota_accounts(session, user, now=now)
        quota_id, used_id = accounts.quota.id, accounts.used.id
    barrier = threading.Barrier(20)
    outcomes: list[str] = []

    def attempt() -> None:
        barrier.wait()
        try:
            with transaction(sessions) as session:
                _hold(session, quota_id, used_id, now)
            outcomes.append("ok")
        except ExceedsCredits:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with transaction(sessions) as session:
        balance = quota_balance(session, user, now=now)
    engine.dispose()
    assert sorted(outcomes).count("ok") == 5
    assert outcomes.count("refused") == 15
    assert (balance.available, balance.reserved) == (0, 5)
