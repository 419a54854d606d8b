"""The shared counters and the waiting room's decisions, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass

import pytest
from sqlalchemy.exc import OperationalError

from emeterai.accounts import create_account, issue_token
from emeterai.admission.room import RequestFacts, WaitingRoom, lanes_of_tokens
from emeterai.admission.settings import AdmissionSettings
from emeterai.admission.store import AdmissionStore, Sample
from emeterai.admission.tickets import LANE_NEW, LANE_PAID, LANE_PROGRESS, TicketKeys
from emeterai.api.admission import prepare_store, store_url
from emeterai.config import Settings
from emeterai.db import transaction
from emeterai.quota import add_quota
from emeterai.runtime import Runtime

NOW_MS = 1_800_000_000_000


@pytest.fixture
def store(settings: Settings) -> Iterator[AdmissionStore]:
    url = store_url(settings, AdmissionSettings())
    assert ("admission.db" in url) == settings.resolved_database_url.startswith("sqlite")
    opened = AdmissionStore.open(url)
    try:
        yield opened
    finally:
        opened.close()


def test_arrivals_take_consecutive_numbers_and_ticks_admit_in_order(
    store: AdmissionStore,
) -> None:
    first = [store.arrive(LANE_NEW, now_ms=NOW_MS)[0] for _ in range(5)]
    assert first == [1, 2, 3, 4, 5]
    snapshot = store.tick(2.5, burst=10, now_ms=NOW_MS)
    assert snapshot.admitted == (0, 0, 2) and snapshot.waiting(LANE_NEW) == 3
    assert snapshot.credit == pytest.approx(0.5)
    snapshot = store.tick(100, burst=3, now_ms=NOW_MS)
    assert snapshot.admitted == (0, 0, 5) and snapshot.credit == 3  # the burst caps it
    seq, at_once, snapshot = store.arrive(LANE_PAID, now_ms=NOW_MS)
    assert (seq, at_once) == (1, True) and snapshot.credit == 2
    assert store.snapshot(now_ms=NOW_MS).admitted == (0, 1, 5)


def test_a_waiting_higher_lane_blocks_immediate_admission_below_it(
    store: AdmissionStore,
) -> None:
    store.arrive(LANE_PROGRESS, now_ms=NOW_MS)  # no credit: it waits
    store.tick(0.5, burst=5, now_ms=NOW_MS)
    _, at_once, _ = store.arrive(LANE_NEW, now_ms=NOW_MS)
    assert not at_once


def test_concurrent_arrivals_never_share_a_number(store: AdmissionStore) -> None:
    with ThreadPoolExecutor(8) as pool:
        numbers = list(pool.map(lambda _: store.arrive(LANE_NEW, now_ms=NOW_MS)[0], range(120)))
    assert sorted(numbers) == list(range(1, 121))


def test_a_batch_of_arrivals_is_the_same_as_taking_them_one_by_one(
    store: AdmissionStore,
) -> None:
    store.tick(2.0, burst=5, now_ms=NOW_MS)  # credit for two admissions at once
    lanes = [LANE_NEW, LANE_NEW, LANE_PAID, LANE_NEW, LANE_PROGRESS]
    taken, snapshot = store.arrive_many(lanes, now_ms=NOW_MS)
    # The first two new arrivals use the credit; after that everyone waits in line,
    # including the higher lanes (no credit is left).
    assert taken == [(1, True), (2, True), (1, False), (3, False), (1, False)]
    assert snapshot.issued == (1, 1, 3) and snapshot.admitted == (0, 0, 2)
    assert snapshot.credit == 0
    assert store.snapshot(now_ms=NOW_MS).issued == (1, 1, 3)
    with pytest.raises(ValueError):
        store.arrive_many([LANE_NEW, 7], now_ms=NOW_MS)
    assert store.snapshot(now_ms=NOW_MS).issued == (1, 1, 3)  # a bad batch takes nothing


def test_samples_are_upserted_per_process_and_minute(store: AdmissionStore) -> None:
    store.record_sample(Sample(NOW_MS, "p1", 10, 1, 2, 3, 4.0))
    store.record_sample(Sample(NOW_MS, "p1", 20, 1, 2, 3, 4.0))
    store.record_sample(Sample(NOW_MS, "p2", 5, 0, 0, 0, 0.0))
    samples = store.samples_since(NOW_MS - 1)
    assert sorted((s.process, s.requests) for s in samples) == [("p1", 20), ("p2", 5)]
    store.forget_samples_before(NOW_MS + 1)
    assert store.samples_since(0) == []


@dataclass
class Clock:
    now: float = NOW_MS / 1000

    def __call__(self) -> float:
        return self.now


def make_room(store: AdmissionStore, runtime: Runtime, clock: Clock, **overrides: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = {"rate_per_s": 2.0, "pass_ttl_s": 60, "hold_s": 0}
    values.update(overrides)
    admission = AdmissionSettings(**values)  # type: ignore[arg-type]
    keys = TicketKeys(b"k" * 32, rotation_s=3600, ticket_ttl_s=7200)
    return WaitingRoom(
        admission,
        keys=keys,
        store=store,
        slot_bounds=(2, 2),
        classify=lambda tokens: lanes_of_tokens(runtime.sessions, tokens),
        clock=clock,
    )


def facts(session: str, ticket: str | None = None, token: str | None = None) -> RequestFacts:
    return RequestFacts(
        address="10.0.0.1", token=token, session=session, ticket_text=ticket, stamp=True
    )


def test_waiting_room_queues_admits_in_order_and_binds(
    store: AdmissionStore, runtime: Runtime
) -> None:
    clock = Clock()
    room = make_room(store, runtime, clock)

    async def scenario() -> None:
        sessions = [f"session-{i:02d}-abcdefghijkl" for i in range(4)]
        verdicts = [await room.decide(facts(s)) for s in sessions]
        assert [v.outcome for v in verdicts] == ["queued"] * 4
        assert [v.ticket.seq for v in verdicts if v.ticket] == [1, 2, 3, 4]
        assert [v.position for v in verdicts] == [1, 2, 3, 4]
        texts = [room.keys.encode(v.ticket) for v in verdicts if v.ticket]
        clock.now += 1
        room.tick(1.0)  # rate 2/s for one second: the first two
        got = [
            (await room.decide(facts(s, t))).outcome for s, t in zip(sessions, texts, strict=True)
        ]
        assert got == ["admit", "admit", "queued", "queued"]
        # Someone else's ticket is worth nothing: that request queues at the back.
        stolen = await room.decide(facts("thief-session-abcdefghijkl", texts[0]))
        assert stolen.outcome == "queued" and stolen.ticket and stolen.ticket.seq == 5
        view = room.queue_view(room.keys.decode(texts[3], now_ms=int(clock.now * 1000)))
        assert view["ticket_state"] == "waiting" and view["position"] == 2

    asyncio.run(scenario())


def test_arrivals_that_meet_share_a_transaction_and_keep_their_order(
    store: AdmissionStore, runtime: Runtime
) -> None:
    room = make_room(store, runtime, Clock())
    batches: list[int] = []
    arrive_many = store.arrive_many

    def counted(lanes: list[int], *, now_ms: int) -> object:
        batches.append(len(lanes))
        return arrive_many(lanes, now_ms=now_ms)

    store.arrive_many = counted  # type: ignore[method-assign,assignment]

    async def scenario() -> list[int]:
        crowd = [
            RequestFacts(f"10.0.1.{i}", None, f"crowd-{i:02d}-abcdefghijkl", None, True)
            for i in range(20)
        ]
        verdicts = await asyncio.gather(*(room.decide(one) for one in crowd))
        return [v.ticket.seq for v in verdicts if v.ticket]

    assert asyncio.run(scenario()) == list(range(1, 21))
    assert sum(batches) == 20 and len(batches) < 20


def test_a_crowd_with_tokens_is_sorted_into_lanes_in_one_read_and_a_failed_read_waits_as_new(
    store: AdmissionStore, runtime: Runtime
) -> None:
    now = runtime.clock.now()
    tokens: list[str] = []
    with transaction(runtime.sessions) as session:
        for i in range(6):
            account = create_account(session, f"crowd{i}@example.id", now=now)
            tokens.append(issue_token(session, account, now=now).token)
            if i % 2 == 0:
                add_quota(session, account.id, 1, reference=f"crowd-{i}", now=now)
    reads: list[int] = []
    failing = False

    def classify(batch: Collection[str]) -> dict[str, int]:
        reads.append(len(batch))
        if failing:
            raise OperationalError("SELECT", {}, Exception("database is locked"))
        return lanes_of_tokens(runtime.sessions, batch)

    room = make_room(store, runtime, Clock())
    room.classify = classify

    async def scenario(name: str) -> list[int]:
        crowd = [
            RequestFacts(f"10.0.2.{i}", token, f"{name}-{i:02d}-abcdefghijkl", None, True)
            for i, token in enumerate(tokens)
        ]
        verdicts = await asyncio.gather(*(room.decide(one) for one in crowd))
        return [v.ticket.lane for v in verdicts if v.ticket]

    assert asyncio.run(scenario("early")) == [LANE_PAID, LANE_NEW] * 3
    assert sum(reads) == 6 and len(reads) < 6
    failing = True
    assert asyncio.run(scenario("later")) == [LANE_NEW] * 6


def test_a_request_due_soon_is_held_open_until_the_frontier_passes_it(
    store: AdmissionStore, runtime: Runtime
) -> None:
    clock = Clock()
    room = make_room(store, runtime, clock, rate_per_s=4.0, hold_s=1.0)

    async def scenario() -> list[tuple[str, int]]:
        for _ in range(3):  # the frontier's speed becomes known: 4/s
            clock.now += 1
            await asyncio.to_thread(room.tick, 1.0)
        crowd = [facts(f"held-{i:02d}-abcdefghijkl") for i in range(8)]
        verdicts = [await room.decide(one) for one in crowd[:4]]  # the burst: let in at once
        assert [v.outcome for v in verdicts] == ["admit"] * 4
        held = [asyncio.ensure_future(room.decide(one)) for one in crowd[4:]]
        await asyncio.sleep(0.05)
        assert room.held == 4 and not any(task.done() for task in held)
        clock.now += 0.5
        await asyncio.to_thread(room.tick, 0.5)  # two more places: the first two holders
        return [(v.outcome, v.held_ms) for v in await asyncio.gather(*held)]

    outcomes = asyncio.run(scenario())
    assert [outcome for outcome, _ in outcomes] == ["admit", "admit", "queued", "queued"]
    assert all(0 < held_ms < 1000 for _, held_ms in outcomes[:2])
    assert room.held == 0


def test_rate_limits_keep_the_ticket(store: AdmissionStore, runtime: Runtime) -> None:
    clock = Clock()
    room = make_room(store, runtime, clock, binding_rate_per_s=0.1, binding_burst=2)

    async def scenario() -> None:
        first = await room.decide(facts("storm-session-abcdefghijkl"))
        assert first.outcome == "queued" and first.ticket
        text = room.keys.encode(first.ticket)
        await room.decide(facts("storm-session-abcdefghijkl", text))
        limited = await room.decide(facts("storm-session-abcdefghijkl", text))
        assert limited.outcome == "rate_limited" and limited.retry_after_s >= 1
        assert limited.ticket == first.ticket

    asyncio.run(scenario())


def test_lanes_from_quota_and_from_an_expired_pass(store: AdmissionStore, runtime: Runtime) -> None:
    clock = Clock()
    now = runtime.clock.now()
    with transaction(runtime.sessions) as session:
        paid = create_account(session, "paid@example.id", now=now)
        paid_token = issue_token(session, paid, now=now).token
        add_quota(session, paid.id, 2, reference="lane-paid", now=now)
        fresh = create_account(session, "fresh@example.id", now=now)
        fresh_token = issue_token(session, fresh, now=now).token
    unknown = "emt_" + "a" * 16 + "_" + "b" * 43
    assert lanes_of_tokens(runtime.sessions, [paid_token, fresh_token, unknown, "junk"]) == {
        paid_token: LANE_PAID,
        fresh_token: LANE_NEW,
        unknown: LANE_NEW,
        "junk": LANE_NEW,
    }
    room = make_room(store, runtime, clock)

    async def scenario() -> None:
        new = await room.decide(facts("s-new-abcdefghijklmnop", token=fresh_token))
        paid_verdict = await room.decide(facts("s-paid-abcdefghijklmnop", token=paid_token))
        assert new.ticket and new.ticket.lane == LANE_NEW
        assert paid_verdict.ticket and paid_verdict.ticket.lane == LANE_PAID
        assert paid_verdict.position == 1  # ahead of the earlier new arrival
        clock.now += 1
        room.tick(1.0)
        text = room.keys.encode(paid_verdict.ticket)
        admitted = await room.decide(facts("s-paid-abcdefghijklmnop", text, paid_token))
        assert admitted.outcome == "admit" and admitted.ticket and admitted.ticket.is_pass
        clock.now += 120  # the pass (60 s) ran out mid-flow
        pass_text = room.keys.encode(admitted.ticket)
        again = await room.decide(facts("s-paid-abcdefghijklmnop", pass_text, paid_token))
        assert again.ticket and again.ticket.lane == LANE_PROGRESS

    asyncio.run(scenario())


def test_etas_follow_the_faster_of_the_long_and_the_recent_frontier_speed(
    store: AdmissionStore, runtime: Runtime
) -> None:
    """A frontier that speeds up must not send people to sleep past their turn; after a
    slowdown the longer mean keeps the ETAs early rather than late."""
    clock = Clock()
    room = make_room(store, runtime, clock)

    def run(seconds: int, rate: float) -> None:
        room.controller.rate_per_s = rate
        for _ in range(seconds):
            clock.now += 1
            room.tick(1.0)

    run(25, 2.0)
    assert room.global_rate_per_s() == pytest.approx(2.0)
    run(6, 10.0)  # the last 5 s at 10/s; over 30 s the mean is about 3.3/s
    assert room.global_rate_per_s() == pytest.approx(10.0)
    assert room.eta_s(100) == pytest.approx(10.0)
    run(10, 1.0)  # slower again: the 30 s mean (about 3/s) beats the last 5 s
    assert 2.5 < room.global_rate_per_s() < 4.0


def test_serve_prepares_the_store_before_its_workers_start(settings: Settings) -> None:
    """`emeterai serve` creates the store once, so that its workers never race to create
    it (on SQLite, switching a new file to WAL fails when another process holds it)."""
    url = store_url(settings, AdmissionSettings())
    prepare_store(settings)
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        with closing(sqlite3.connect(path)) as connection:  # not through the store's engine
            assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert connection.execute("SELECT count(*) FROM admission_lanes").fetchone() == (3,)
    prepare_store(settings)  # a second start finds it ready
    store = AdmissionStore.open(url)
    try:
        assert store.snapshot(now_ms=NOW_MS).queue_length == 0
    finally:
        store.close()
