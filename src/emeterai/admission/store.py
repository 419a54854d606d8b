"""The line's shared state: two integers per lane and one credit, in a database.

`issued` is the arrival counter, `admitted` the now-serving frontier of each lane. The
`credit` is the admission budget every process adds its rate to. Status samples (one row
per process and minute) feed the public status page. See docs/admission.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from emeterai.admission.tickets import LANE_NEW, LANES
from emeterai.db import NAMING_CONVENTION, READ_ONLY_OPTION, is_sqlite, make_engine

__all__ = [
    "AdmissionStore",
    "Sample",
    "Snapshot",
    "admission_metadata",
    "distribute",
]

# Kept apart from the domain metadata: on SQLite these tables live in their own file.
admission_metadata = MetaData(naming_convention=NAMING_CONVENTION)

lanes_table = Table(
    "admission_lanes",
    admission_metadata,
    Column("lane", Integer, primary_key=True, autoincrement=False),
    Column("issued", BigInteger, nullable=False),
    Column("admitted", BigInteger, nullable=False),
    CheckConstraint("lane >= 0 AND lane <= 2", name="lane_known"),
    CheckConstraint("admitted >= 0 AND admitted <= issued", name="admitted_within_issued"),
)

state_table = Table(
    "admission_state",
    admission_metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("credit", Float, nullable=False),
    # The sum of every budget ever added: its growth rate is the frontier's speed.
    Column("budget_total", Float, nullable=False),
    Column("ticked_ms", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
    CheckConstraint("credit >= 0", name="credit_non_negative"),
)

samples_table = Table(
    "admission_samples",
    admission_metadata,
    Column("minute_ms", BigInteger, primary_key=True, autoincrement=False),
    Column("process", String(64), primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("errors_5xx", BigInteger, nullable=False),
    Column("rejected_429", BigInteger, nullable=False),
    Column("queue_max", BigInteger, nullable=False),
    Column("wait_s_max", Float, nullable=False),
    CheckConstraint("requests >= 0 AND errors_5xx >= 0 AND rejected_429 >= 0", name="counts"),
)

# Every FAIRNESS_PERIOD-th admission goes to a lower lane that is waiting, so no lane starves.
FAIRNESS_PERIOD = 10


@dataclass(frozen=True)
class Snapshot:
    issued: tuple[int, int, int]
    admitted: tuple[int, int, int]
    credit: float
    at_ms: int
    budget_total: float = 0.0

    def waiting(self, lane: int) -> int:
        return self.issued[lane] - self.admitted[lane]

    @property
    def queue_length(self) -> int:
        return sum(self.waiting(lane) for lane in range(len(LANES)))

    @property
    def admitted_total(self) -> int:
        return sum(self.admitted)


@dataclass(frozen=True)
class Sample:
    minute_ms: int
    process: str
    requests: int
    errors_5xx: int
    rejected_429: int
    queue_max: int
    wait_s_max: float


def distribute(slots: int, waiting: Sequence[int], served_before: int) -> list[int]:
    """Hand out `slots` admissions: strict priority, except that every FAIRNESS_PERIOD-th
    admission goes to the lowest-priority lane that waits (then the next lowest)."""
    if slots < 0 or any(count < 0 for count in waiting):
        raise ValueError("slots and waiting counts are never negative")
    left = list(waiting)
    grants = [0] * len(left)
    for index in range(slots):
        turn = (served_before + index) % FAIRNESS_PERIOD
        order = list(range(len(left)))
        if turn == FAIRNESS_PERIOD - 1:
            order = order[::-1]
        elif turn == FAIRNESS_PERIOD - 2 and len(left) > 2:
            order = [1, 0, 2]
        for lane in order:
            if left[lane] > 0:
                left[lane] -= 1
                grants[lane] += 1
                break
        else:
            break
    return grants


class AdmissionStore:
    def __init__(self, engine: Engine, *, owns_engine: bool) -> None:
        self.engine = engine
        self._owns_engine = owns_engine
        self._postgres = engine.dialect.name == "postgresql"

    @classmethod
    def open(cls, url: str) -> AdmissionStore:
        engine = make_engine(url, pool_size=4)
        if is_sqlite(url):
            # The SQLite store is a scratch file of counters: created, never migrated.
            admission_metadata.create_all(engine)
        store = cls(engine, owns_engine=True)
        store.ensure_rows()
        return store

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    def ensure_rows(self) -> None:
        with self.engine.begin() as connection:
            present = {row[0] for row in connection.execute(select(lanes_table.c.lane))}
            for lane in range(len(LANES)):
                if lane not in present:
                    self._insert_ignore(
                        connection, lanes_table, {"lane": lane, "issued": 0, "admitted": 0}
                    )
            if connection.execute(select(state_table.c.id)).first() is None:
                self._insert_ignore(
                    connection,
                    state_table,
                    {"id": 1, "credit": 0.0, "budget_total": 0.0, "ticked_ms": 0},
                )

    def _insert_ignore(self, connection: Connection, table: Table, values: dict[str, Any]) -> None:
        insert = postgresql.insert if self._postgres else sqlite.insert
        connection.execute(insert(table).values(**values).on_conflict_do_nothing())

    def _lock(self, connection: Connection) -> tuple[float, list[int], list[int]]:
        state = select(state_table.c.credit).where(state_table.c.id == 1)
        lanes = select(lanes_table.c.issued, lanes_table.c.admitted).order_by(lanes_table.c.lane)
        if self._postgres:
            state, lanes = state.with_for_update(), lanes.with_for_update()
        credit = float(connection.execute(state).scalar_one())
        rows = connection.execute(lanes).all()
        return credit, [int(r.issued) for r in rows], [int(r.admitted) for r in rows]

    @staticmethod
    def _snapshot(
        issued: list[int],
        admitted: list[int],
        credit: float,
        now_ms: int,
        budget_total: float = 0.0,
    ) -> Snapshot:
        return Snapshot(
            issued=(issued[0], issued[1], issued[2]),
            admitted=(admitted[0], admitted[1], admitted[2]),
            credit=credit,
            at_ms=now_ms,
            budget_total=budget_total,
        )

    def _reading(self) -> Connection:
        """A connection for reads only: on SQLite no write lock (WAL gives a snapshot)."""
        return self.engine.connect().execution_options(**{READ_ONLY_OPTION: True})

    def arrive(self, lane: int, *, now_ms: int) -> tuple[int, bool, Snapshot]:
        """Take the next number in `lane`. If nobody waits ahead and credit is left, the
        arrival is admitted at once. Returns (seq, admitted now, snapshot)."""
        [(seq, at_once)], snapshot = self.arrive_many([lane], now_ms=now_ms)
        return seq, at_once, snapshot

    def arrive_many(
        self, lanes: Sequence[int], *, now_ms: int
    ) -> tuple[list[tuple[int, bool]], Snapshot]:
        """`arrive` for each lane in turn, in one transaction: a burst of arrivals costs
        one lock and one commit. Returns (seq, admitted now) per arrival, and the snapshot."""
        if not lanes or not all(0 <= lane <= LANE_NEW for lane in lanes):
            raise ValueError(f"unknown lanes {list(lanes)[:5]}")
        with self.engine.begin() as connection:
            credit, issued, admitted = self._lock(connection)
            credit_before = credit
            taken: list[tuple[int, bool]] = []
            for lane in lanes:
                nobody_ahead = all(issued[i] == admitted[i] for i in range(lane + 1))
                issued[lane] += 1
                at_once = nobody_ahead and credit >= 1.0
                if at_once:
                    admitted[lane] = issued[lane]
                    credit -= 1.0
                taken.append((issued[lane], at_once))
            if credit != credit_before:
                connection.execute(
                    update(state_table).where(state_table.c.id == 1).values(credit=credit)
                )
            for lane in sorted(set(lanes)):
                connection.execute(
                    update(lanes_table)
                    .where(lanes_table.c.lane == lane)
                    .values(issued=issued[lane], admitted=admitted[lane])
                )
            return taken, self._snapshot(issued, admitted, credit, now_ms)

    def tick(self, budget: float, *, burst: float, now_ms: int) -> Snapshot:
        """Add this process's budget and move the frontiers forward, lane by lane."""
        if budget < 0 or burst < 1:
            raise ValueError("the budget is never negative and the burst at least 1")
        with self.engine.begin() as connection:
            credit, issued, admitted = self._lock(connection)
            credit += budget
            waiting = [issued[i] - admitted[i] for i in range(len(LANES))]
            grants = distribute(int(credit), waiting, sum(admitted))
            for lane, grant in enumerate(grants):
                if grant:
                    admitted[lane] += grant
                    connection.execute(
                        update(lanes_table)
                        .where(lanes_table.c.lane == lane)
                        .values(admitted=admitted[lane])
                    )
            credit = min(credit - sum(grants), burst)
            budget_total = float(
                connection.execute(
                    update(state_table)
                    .where(state_table.c.id == 1)
                    .values(
                        credit=credit,
                        budget_total=state_table.c.budget_total + budget,
                        ticked_ms=now_ms,
                    )
                    .returning(state_table.c.budget_total)
                ).scalar_one()
            )
            return self._snapshot(issued, admitted, credit, now_ms, budget_total)

    def snapshot(self, *, now_ms: int) -> Snapshot:
        with self._reading() as connection:
            state = connection.execute(
                select(state_table.c.credit, state_table.c.budget_total).where(
                    state_table.c.id == 1
                )
            ).one()
            rows = connection.execute(
                select(lanes_table.c.issued, lanes_table.c.admitted).order_by(lanes_table.c.lane)
            ).all()
        return self._snapshot(
            [int(r.issued) for r in rows],
            [int(r.admitted) for r in rows],
            float(state.credit),
            now_ms,
            float(state.budget_total),
        )

    def record_sample(self, sample: Sample) -> None:
        """This process's totals for one minute (written again as the minute fills up)."""
        values = {
            "minute_ms": sample.minute_ms,
            "process": sample.process[:64],
            "requests": sample.requests,
            "errors_5xx": sample.errors_5xx,
            "rejected_429": sample.rejected_429,
            "queue_max": sample.queue_max,
            "wait_s_max": sample.wait_s_max,
        }
        insert = postgresql.insert if self._postgres else sqlite.insert
        statement = insert(samples_table).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["minute_ms", "process"],
            set_={
                key: statement.excluded[key]
                for key in values
                if key not in ("minute_ms", "process")
            },
        )
        with self.engine.begin() as connection:
            connection.execute(statement)

    def samples_since(self, since_ms: int) -> list[Sample]:
        with self._reading() as connection:
            rows = connection.execute(
                select(samples_table)
                .where(samples_table.c.minute_ms >= since_ms)
                .order_by(samples_table.c.minute_ms)
            ).all()
        return [
            Sample(
                minute_ms=int(r.minute_ms),
                process=r.process,
                requests=int(r.requests),
                errors_5xx=int(r.errors_5xx),
                rejected_429=int(r.rejected_429),
                queue_max=int(r.queue_max),
                wait_s_max=float(r.wait_s_max),
            )
            for r in rows
        ]

    def forget_samples_before(self, before_ms: int) -> None:
        with self.engine.begin() as connection:
            connection.execute(samples_table.delete().where(samples_table.c.minute_ms < before_ms))
