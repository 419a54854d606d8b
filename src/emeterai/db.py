"""Engine and sessions. The caller owns the transaction: see `transaction()`."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

READ_ONLY_OPTION = "emeterai_read_only"

# SQLite only auto-increments an INTEGER PRIMARY KEY, so big ids are INTEGER there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps are stored and returned as aware UTC datetimes on both databases."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


@dataclass
class WriteLockStats:
    """How long this process's transactions waited for SQLite's single write lock, and
    held it (from BEGIN IMMEDIATE until COMMIT or ROLLBACK is issued). On SQLite that
    lock bounds what the server can do: /metrics shows it (docs/performance.md)."""

    transactions: int = 0
    waited_s: float = 0.0
    held_s: float = 0.0
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, waited_s: float = 0.0, held_s: float | None = None) -> None:
        with self._guard:
            self.waited_s += waited_s
            if held_s is not None:
                self.held_s += held_s
                self.transactions += 1

    def totals(self) -> tuple[int, float, float]:
        with self._guard:
            return self.transactions, self.waited_s, self.held_s


# The domain database's lock, for the whole process (the server's runtime passes it).
WRITE_LOCK = WriteLockStats()
_HELD_SINCE = "emeterai_write_lock_since"


def make_engine(
    url: str, *, pool_size: int = 10, write_lock: WriteLockStats | None = None
) -> Engine:
    if is_sqlite(url):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_S, "check_same_thread": False}
        )
        gate = WriterGate(Path(f"{path}-writer") if path and path != ":memory:" else None)
        _configure_sqlite(engine, write_lock, gate)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


SQLITE_BUSY_S = 30.0


class WriterGate:
    """Writers to one SQLite file queue here before `BEGIN IMMEDIATE`, so that the write
    lock passes from one to the next the moment it is released.

    Without it, writers wait in SQLite's busy handler, which sleeps 1, 2, 5, ... 25, 50,
    100 ms between attempts: under load the lock then stood idle a quarter of the time
    while writers slept (docs/performance.md, Spike). Here a thread lock queues the
    process's writers and an exclusive `flock` on `<database>-writer` queues the
    processes; both wake a waiter as soon as the holder leaves. The gate is held from
    BEGIN IMMEDIATE until the COMMIT or ROLLBACK has run, the same span as SQLite's lock,
    and SQLite's own lock and busy timeout still guard against any writer outside it.

    A thread that opens a second write transaction while holding one passes the gate
    (it would deadlock on itself otherwise) and meets SQLite's busy timeout, as before.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._owner: int | None = None
        self._holders: set[int] = set()  # id() of the raw connections inside

    def _reset_after_fork(self) -> None:
        # A child process shares the parent's open file (and its flock): never use it.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._fd = None
        self._owner = None
        self._holders = set()

    def enter(self, connection: object) -> None:
        if os.getpid() != self._pid:
            self._reset_after_fork()
        me = threading.get_ident()
        if self._owner == me:
            self._holders.add(id(connection))
            return
        if not self._lock.acquire(timeout=SQLITE_BUSY_S):
            raise sqlite3.OperationalError("database is locked")
        try:
            if self.path is not None:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._lock.release()
            raise
        self._owner = me
        self._holders = {id(connection)}

    def leave(self, connection: object) -> None:
        """Called after every COMMIT and ROLLBACK; a connection that is not inside (a
        read, or the pool's reset) leaves nothing."""
        if id(connection) not in self._holders or os.getpid() != self._pid:
            return
        self._holders.discard(id(connection))
        if self._holders:
            return
        self._owner = None
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._lock.release()


def _raw(connection: Any) -> Any:
    """The sqlite3 connection behind SQLAlchemy's pool proxy (or itself)."""
    return getattr(connection, "dbapi_connection", None) or connection


def _configure_sqlite(engine: Engine, write_lock: WriteLockStats | None, gate: WriterGate) -> None:
    """WAL, foreign keys, and one writer at a time: every transaction is BEGIN IMMEDIATE,
    queued through the `WriterGate`.

    That is SQLite's equivalent of the row locks PostgreSQL takes with FOR UPDATE: a
    balance check and the write that follows it can never interleave with another writer.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A read-only unit takes no write lock: WAL gives it a snapshot of its own.
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        if read_only:
            connection.exec_driver_sql("BEGIN DEFERRED")
            return
        started = time.perf_counter()
        raw = _raw(connection.connection)
        gate.enter(raw)
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            gate.leave(raw)
            raise
        if write_lock is not None:
            connection.info[_HELD_SINCE] = now = time.perf_counter()
            write_lock.add(waited_s=now - started)

    if write_lock is not None:

        def _on_end(connection: Any) -> None:
            since = connection.info.pop(_HELD_SINCE, None)
            if since is not None:
                write_lock.add(held_s=time.perf_counter() - since)

        event.listen(engine, "commit", _on_end)
        event.listen(engine, "rollback", _on_end)

    # The gate opens after the COMMIT or ROLLBACK has run (SQLAlchemy's events fire
    # before it), so the next writer's BEGIN IMMEDIATE never meets the lock still held.
    # The pool's reset on return is a rollback too, so no path leaves the gate shut.
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        try:
            commit(dbapi_connection)
        finally:
            gate.leave(_raw(dbapi_connection))

    def do_rollback(dbapi_connection: Any) -> None:
        try:
            rollback(dbapi_connection)
        finally:
            gate.leave(_raw(dbapi_connection))

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]

    @event.listens_for(engine, "close")
    @event.listens_for(engine, "invalidate")
    def _on_gone(dbapi_connection: Any, *_: Any) -> None:
        # A connection closed inside a transaction (SQLite rolls it back) opens the gate.
        gate.leave(dbapi_connection)


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """The one way to open a unit of work: commit on success, roll back on any error."""
    with sessions() as session, session.begin():
        yield session


@contextmanager
def read_transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A unit of work that only reads, from one consistent snapshot.

    PostgreSQL: REPEATABLE READ, so every query sees the same moment (the audit adds up
    many queries). SQLite: a deferred BEGIN, so slow work inside (Argon2, pyHanko) never
    holds the single write lock. Nothing is ever committed.
    """
    with sessions() as session:
        options: dict[str, Any] = {READ_ONLY_OPTION: True}
        if session.get_bind().dialect.name == "postgresql":
            options["isolation_level"] = "REPEATABLE READ"
            options["postgresql_readonly"] = True
        session.connection(execution_options=options)
        # Closing (not rolling back) keeps what was read usable after the block; the
        # pool rolls the connection back when it takes it back.
        yield session
