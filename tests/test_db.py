"""SQLite's write lock: its accounting (what /metrics reports as its busy share), and the
gate that queues writers for it."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from emeterai.db import (
    WriteLockStats,
    make_engine,
    make_sessions,
    read_transaction,
    transaction,
)


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


def _gate_is_shut(path: Path) -> bool:
    """Whether some writer holds the gate's flock (tried from a descriptor of our own)."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def test_the_writer_gate_is_held_exactly_while_a_write_transaction_is_open(
    tmp_path: Path,
) -> None:
    database = tmp_path / "gate.db"
    engine = make_engine(f"sqlite:///{database}")
    sessions = make_sessions(engine)
    gate = Path(f"{database}-writer")
    try:
        with transaction(sessions) as session:
            session.execute(text("CREATE TABLE t (x INTEGER)"))
            assert _gate_is_shut(gate)
        assert not _gate_is_shut(gate)
        with read_transaction(sessions) as session:
            session.execute(text("SELECT count(*) FROM t")).scalar_one()
            assert not _gate_is_shut(gate)  # a read never queues
        with pytest.raises(RuntimeError), transaction(sessions) as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
            raise RuntimeError("roll back")
        assert not _gate_is_shut(gate)
        # A connection given back to the pool mid-transaction is rolled back: the gate opens.
        connection = engine.connect()
        connection.begin()
        connection.execute(text("INSERT INTO t VALUES (2)"))
        assert _gate_is_shut(gate)
        connection.close()
        assert not _gate_is_shut(gate)
        with read_transaction(sessions) as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 0
    finally:
        engine.dispose()


def test_writers_in_threads_and_processes_take_turns_and_lose_nothing(tmp_path: Path) -> None:
    """Read-modify-write increments from two processes of four threads each: the gate
    serialises them (a lost update would show in the total), and none fails on a busy
    database."""
    database = tmp_path / "turns.db"
    url = f"sqlite:///{database}"
    engine = make_engine(url)
    sessions = make_sessions(engine)
    with transaction(sessions) as session:
        session.execute(text("CREATE TABLE c (n INTEGER)"))
        session.execute(text("INSERT INTO c VALUES (0)"))
    rounds = 50
    script = f"""
import threading
from sqlalchemy import text
from emeterai.db import make_engine, make_sessions, transaction
sessions = make_sessions(make_engine({url!r}))
def work():
    for _ in range({rounds}):
        with transaction(sessions) as session:
            n = session.execute(text("SELECT n FROM c")).scalar_one()
            session.execute(text("UPDATE c SET n = :n"), {{"n": n + 1}})
threads = [threading.Thread(target=work) for _ in range(4)]
for thread in threads: thread.start()
for thread in threads: thread.join()
"""
    try:
        other = subprocess.Popen([sys.executable, "-c", script])

        def work() -> None:
            for _ in range(rounds):
                with transaction(sessions) as session:
                    n = session.execute(text("SELECT n FROM c")).scalar_one()
                    session.execute(text("UPDATE c SET n = :n"), {"n": n + 1})

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert other.wait(timeout=120) == 0
        with read_transaction(sessions) as session:
            assert session.execute(text("SELECT n FROM c")).scalar_one() == 2 * 4 * rounds
    finally:
        engine.dispose()
