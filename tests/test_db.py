"""The SQLite write lock's accounting (what /metrics reports as its busy share)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from emeterai.db import WriteLockStats, make_engine, make_sessions, read_transaction, transaction


def test_write_transactions_are_timed_and_reads_are_not(tmp_path: Path) -> None:
    stats = WriteLockStats()
    engine = make_engine(f"sqlite:///{tmp_path / 'lock.db'}", write_lock=stats)
    sessions = make_sessions(engine)
    try:
        with transaction(sessions) as session:
            session.execute(text("CREATE TABLE t (x INTEGER)"))
            session.execute(text("INSERT INTO t VALUES (1)"))
        with read_transaction(sessions) as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
        with pytest.raises(RuntimeError), transaction(sessions) as session:
            session.execute(text("INSERT INTO t VALUES (2)"))
            raise RuntimeError("roll back")
        transactions, waited_s, held_s = stats.totals()
        assert transactions == 2  # the commit and the rollback; the read took no lock
        assert held_s > 0 and waited_s >= 0
    finally:
        engine.dispose()
