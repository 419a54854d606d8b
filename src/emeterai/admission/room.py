"""The waiting room: decides, per protected request, admit, wait, or slow down.

Everything here is in memory except two things, each bounded: taking numbers for a batch
of new arrivals (two indexed reads to decide their lanes and one counter update, shared by
the arrivals that meet), and the periodic tick that advances the frontier. See
docs/admission.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import secrets
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from emeterai.admission.controller import CapacityController, SlotSizer
from emeterai.admission.limits import KeyedRateLimiter
from emeterai.admission.settings import AdmissionSettings
from emeterai.admission.slots import Slots
from emeterai.admission.store import AdmissionStore, Sample, Snapshot
from emeterai.admission.tickets import (
    LANE_NEW,
    LANE_PAID,
    LANE_PROGRESS,
    Ticket,
    TicketKeys,
)
from emeterai.errors import TicketInvalid

__all__ = [
    "RequestFacts",
    "Verdict",
    "WaitingRoom",
    "lanes_of_tokens",
    "retry_after_for",
]

log = logging.getLogger("emeterai.admission")
Outcome = Literal["admit", "queued", "rate_limited"]
# A holder not yet admitted by this process's view of the frontier is answered from a
# view at most this old: another process may have moved the frontier since.
SNAPSHOT_FRESH_S = 0.2
# ETAs use the frontier's mean speed over this window, not the controller's latest rate:
# an ETA from a momentary low sends people to sleep past their turn when the rate recovers.
RATE_WINDOW_S = 30.0
RATE_RECENT_S = 5.0
RECENT_TICKETS_MAX = 10_000
# Far from the turn, people come back at 50-90% of the ETA, at most this long: every
# return costs a request, and the ETA is re-read on each, so a changed rate is caught.
RETRY_AFTER_MAX_S = 60
NEAR_S = 20
TICK_STALE_S = 5.0
# Held requests per slot: a holder due within `hold_s` costs a coroutine, and saves
# the round trips of coming back (and the lag between its turn and its work).
HELD_PER_SLOT = 16
# Admitted requests waiting for a slot, per slot: bursts of pass holders wait (at most
# `local_wait_s`) instead of coming back after a 429 BUSY.
WAITERS_PER_SLOT = 8
# New arrivals that meet while a number is being taken share the next transaction.
ARRIVALS_PER_BATCH = 256
_TOKEN = re.compile(r"^emt_([a-z2-7]{16})_[A-Za-z0-9_-]{43}$")
SESSION_LENGTH_MAX = 64
_SESSION = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@dataclass(frozen=True)
class RequestFacts:
    address: str
    token: str | None
    session: str | None
    ticket_text: str | None
    stamp: bool


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    ticket: Ticket | None
    retry_after_s: int
    position: int
    eta_s: float
    new_session: str | None = None
    held_ms: int = 0  # time held open before admission (queue wait, not service)


def retry_after_for(eta_s: float, hold_s: float = 0.0) -> int:
    """Near the head, come back when the turn is due in about half the hold time, to be
    held open until it comes (one return, not a series of ever shorter ones). Further
    back, at 50-90% (at random) of the ETA capped at RETRY_AFTER_MAX_S: never after the
    turn unless the frontier speeds up by more than a tenth, and a crowd that arrived
    together, all far from their turn, does not come back together."""
    if eta_s <= NEAR_S:
        return max(1, math.ceil(eta_s - hold_s / 2))
    spread = 0.5 + 0.4 * secrets.randbelow(1001) / 1000
    return max(NEAR_S // 2, math.ceil(min(eta_s, RETRY_AFTER_MAX_S) * spread))


def lanes_of_tokens(sessions: sessionmaker[Session], tokens: Collection[str]) -> dict[str, int]:
    """The lane of each bearer token's account: work in progress, paid-but-unused, or new.

    Two indexed reads for the whole batch of arrivals: the tokens' accounts by public id,
    then those accounts' quota balances (the same figures as `quota.quota_balance`), never
    a token's Argon2 hash. The binding is to the token itself, and the admitted request is
    authenticated in full by its route. An unknown, revoked or malformed token is new."""
    from emeterai.accounts.models import ApiToken
    from emeterai.ledger.models import LedgerAccount

    lanes = dict.fromkeys(tokens, LANE_NEW)
    token_ids = {
        token: match.group(1) for token in lanes if (match := _TOKEN.match(token)) is not None
    }
    if not token_ids:
        return lanes
    with sessions() as session:
        account_of: dict[str, int] = dict(
            session.execute(
                select(ApiToken.id, ApiToken.account_id).where(
                    ApiToken.id.in_(set(token_ids.values())), ApiToken.revoked_at.is_(None)
                )
            ).all()
        )
        if not account_of:
            return lanes
        codes = {f"user:{account_id}:quota" for account_id in account_of.values()}
        # Four columns, not the mapped objects: this runs for every batch of arrivals.
        balances = session.execute(
            select(
                LedgerAccount.code,
                LedgerAccount.credits_posted,
                LedgerAccount.debits_posted,
                LedgerAccount.debits_pending,
            ).where(LedgerAccount.code.in_(codes))
        ).all()
        lane_of_code = {
            code: _lane_of_balance(credits, debits, pending)
            for code, credits, debits, pending in balances
        }
    for token, token_id in token_ids.items():
        account_id = account_of.get(token_id)
        if account_id is not None:
            lanes[token] = lane_of_code.get(f"user:{account_id}:quota", LANE_NEW)
    return lanes


def _lane_of_balance(credits_posted: int, debits_posted: int, debits_pending: int) -> int:
    if debits_pending > 0:
        return LANE_PROGRESS
    return LANE_PAID if credits_posted - debits_posted - debits_pending > 0 else LANE_NEW


@dataclass(frozen=True, slots=True)
class Arrival:
    lane: int
    token: str | None  # a bearer token whose account decides the lane, if any
    future: asyncio.Future[tuple[int, int, bool]]


@dataclass
class MinuteCounters:
    minute_ms: int = 0
    requests: int = 0
    errors_5xx: int = 0
    rejected_429: int = 0
    queue_max: int = 0
    wait_s_max: float = 0.0


class WaitingRoom:
    def __init__(
        self,
        settings: AdmissionSettings,
        *,
        keys: TicketKeys,
        store: AdmissionStore,
        slot_bounds: tuple[int, int],
        classify: Callable[[Collection[str]], dict[str, int]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.store = store
        self.classify = classify
        self.clock = clock
        self.process = f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(3)}"
        self.controller = CapacityController(
            target_s=settings.latency_target_s,
            rate_initial_per_s=settings.rate_initial_per_s,
            rate_min_per_s=settings.rate_min_per_s,
            rate_max_per_s=settings.rate_max_per_s,
            pinned_per_s=settings.rate_per_s,
        )
        self.sizer = SlotSizer(*slot_bounds)
        self.slots = Slots(self.sizer.limit, waiters_max=WAITERS_PER_SLOT * self.sizer.limit)
        self.other_slots = Slots(settings.other_inflight_max, waiters_max=0)
        keys_max = settings.limiter_keys_max
        self.binding_limiter = KeyedRateLimiter(
            rate_per_s=settings.binding_rate_per_s, burst=settings.binding_burst, keys_max=keys_max
        )
        self.address_limiter = KeyedRateLimiter(
            rate_per_s=settings.address_rate_per_s, burst=settings.address_burst, keys_max=keys_max
        )
        self.ticket_limiter = KeyedRateLimiter(
            rate_per_s=settings.address_tickets_per_minute / 60,
            burst=settings.address_tickets_per_minute,
            keys_max=keys_max,
        )
        self.poll_limiter = KeyedRateLimiter(
            rate_per_s=settings.queue_polls_per_s, burst=5, keys_max=keys_max
        )
        self._recent: OrderedDict[bytes, Ticket] = OrderedDict()
        self.snapshot = Snapshot((0, 0, 0), (0, 0, 0), 0.0, 0)
        self._snapshot_at = 0.0
        self._history: deque[tuple[float, float]] = deque(maxlen=512)
        self._rate_seen: tuple[int, tuple[float, float] | None] = (-1, None)
        self._rate = 0.0
        # Ticks and frontier reads get a thread of their own, so that a burst of arrivals
        # (which use the default executor) never delays the frontier.
        self._frontier_thread = ThreadPoolExecutor(1, thread_name_prefix="admission-frontier")
        self._refreshing: asyncio.Future[None] | None = None
        self._arrivals: list[Arrival] = []
        self._arriving: asyncio.Future[None] | None = None
        self.minute = MinuteCounters()
        self.ticked_at = 0.0
        # Requests held open until the frontier passes them: (lane, number, their turn).
        self._holders: set[tuple[int, int, asyncio.Future[None]]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- the shared counters -------------------------------------------------------

    def _accept_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.admitted_total >= self.snapshot.admitted_total or (
            snapshot.at_ms >= self.snapshot.at_ms
        ):
            self.snapshot = snapshot
            self._snapshot_at = self.clock()
            if snapshot.budget_total > 0:
                self._history.append((self._snapshot_at, snapshot.budget_total))
            self.minute.queue_max = max(self.minute.queue_max, snapshot.queue_length)
            if self._holders and self._loop is not None:  # often from the frontier's thread
                self._loop.call_soon_threadsafe(self._wake_holders)

    def tick(self, dt_s: float) -> Snapshot:
        """Blocking: add this process's budget and read the frontier (from a thread)."""
        rate = self.controller.rate_per_s
        snapshot = self.store.tick(
            rate * dt_s, burst=max(1.0, rate), now_ms=int(self.clock() * 1000)
        )
        self._accept_snapshot(snapshot)
        self.ticked_at = self.clock()
        return snapshot

    def ticking(self) -> bool:
        return self.clock() - self.ticked_at < TICK_STALE_S

    def control(self) -> None:
        utilisation, backlog = self.slots.load()
        now = self.clock()
        stamp_p99_s = self.controller.stamp_p99_s(now)  # before update() may clear it
        state = self.controller.update(
            now,
            waiting=self.snapshot.queue_length,
            utilisation=utilisation,
            backlog=backlog,
        )
        limit = self.sizer.update(
            now, p99_s=stamp_p99_s, target_s=self.settings.latency_target_s, demand=state.demand
        )
        if limit != self.slots.limit:
            self.slots.resize(limit)
        log.debug(
            "admission control: %s rate=%.2f/s capacity=%.2f/s p99=%.3fs demand=%.2f busy=%.2f"
            " waiting=%d slots=%d",
            state.decision,
            state.rate_per_s,
            self.controller.capacity_per_s or 0.0,
            state.p99_s,
            state.demand,
            state.busy_share,
            self.snapshot.queue_length,
            limit,
        )

    def global_rate_per_s(self) -> float:
        """The sum of every process's admission rate, from the growth of the shared budget
        total: the faster of its means over RATE_WINDOW_S and RATE_RECENT_S (this process's
        own rate until two ticks are seen). ETAs err early: a holder who comes back before
        the turn costs one more request, one who comes back after it leaves a slot idle
        now and joins a crowd of late returners later."""
        history = self._history
        if self._rate_seen == (len(history), history[-1] if history else None):
            return self._rate  # every queued answer asks: computed once per new tick
        now = self.clock()
        while len(history) > 2 and history[0][0] < now - RATE_WINDOW_S:
            history.popleft()
        rates = []
        for window in (RATE_WINDOW_S, RATE_RECENT_S):
            first = next((entry for entry in history if entry[0] >= now - window), None)
            if first is not None:
                (t0, b0), (t1, b1) = first, history[-1]
                if t1 - t0 > 0.5 and b1 > b0:
                    rates.append((b1 - b0) / (t1 - t0))
        if not rates:
            return self.controller.rate_per_s
        self._rate_seen, self._rate = (len(history), history[-1]), max(rates)
        return self._rate

    def position_of(self, ticket: Ticket) -> int:
        snapshot = self.snapshot
        ahead = max(0, ticket.seq - snapshot.admitted[ticket.lane])
        return ahead + sum(snapshot.waiting(lane) for lane in range(ticket.lane))

    def eta_s(self, position: int) -> float:
        return position / self.global_rate_per_s()

    def new_arrival_eta_s(self) -> float:
        return self.eta_s(self.snapshot.queue_length)

    async def run_tick(self, dt_s: float) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._frontier_thread, self.tick, dt_s)

    async def _read_snapshot(self) -> None:
        now_ms = int(self.clock() * 1000)
        loop = asyncio.get_running_loop()
        try:
            snapshot = await loop.run_in_executor(
                self._frontier_thread, lambda: self.store.snapshot(now_ms=now_ms)
            )
        except Exception as error:  # a busy store: answer from the view we have
            log.warning("admission snapshot failed: %s", type(error).__name__)
            return
        self._accept_snapshot(snapshot)

    async def _refresh(self) -> None:
        """Make the frontier view at most SNAPSHOT_FRESH_S old (one read shared by all
        the requests that need it at the same moment)."""
        if self.clock() - self._snapshot_at < SNAPSHOT_FRESH_S:
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._read_snapshot())
        await asyncio.shield(self._refreshing)

    def close(self) -> None:
        self._frontier_thread.shutdown(wait=True)
        self.store.close()

    # --- tickets -------------------------------------------------------------------

    def parse(self, text: str | None, bindings: tuple[bytes, ...]) -> Ticket | None:
        if not text:
            return None
        try:
            ticket = self.keys.decode(text, now_ms=int(self.clock() * 1000))
        except TicketInvalid:
            return None
        return ticket if ticket.binding in bindings else None

    def bindings(self, facts: RequestFacts) -> tuple[bytes, ...]:
        found: list[bytes] = []
        if facts.session and _SESSION.match(facts.session):
            found.append(self.keys.binding("session", facts.session))
        if facts.token:
            found.append(self.keys.binding("token", facts.token[:200]))
        return tuple(found)

    def _remember(self, ticket: Ticket) -> None:
        self._recent.pop(ticket.binding, None)
        self._recent[ticket.binding] = ticket
        while len(self._recent) > RECENT_TICKETS_MAX:
            self._recent.popitem(last=False)

    def _recalled(self, bindings: tuple[bytes, ...]) -> Ticket | None:
        now_ms = int(self.clock() * 1000)
        for binding in bindings:
            ticket = self._recent.get(binding)
            if ticket is not None and now_ms - ticket.issued_ms < self.keys.ticket_ttl_s * 1000:
                return ticket
        return None

    def pass_valid(self, ticket: Ticket) -> bool:
        age_ms = int(self.clock() * 1000) - ticket.admitted_ms
        return ticket.is_pass and age_ms <= self.settings.pass_ttl_s * 1000

    def _queued(self, ticket: Ticket, session: str | None) -> Verdict:
        position = self.position_of(ticket)
        eta = self.eta_s(position)
        self.minute.wait_s_max = max(self.minute.wait_s_max, self.clock() - ticket.issued_ms / 1000)
        retry = retry_after_for(eta, self.settings.hold_s)
        return Verdict("queued", ticket, retry, position, eta, session)

    def _admit(self, ticket: Ticket, session: str | None) -> Verdict:
        if not ticket.is_pass:
            ticket = self.keys.admit(ticket, now_ms=int(self.clock() * 1000))
            self._remember(ticket)
            self.controller.observe_shown(self.clock())
        return Verdict("admit", ticket, 0, 0, 0.0, session)

    async def decide(self, facts: RequestFacts) -> Verdict:
        """Admit, queue or rate-limit one protected request. Never raises for load."""
        now = self.clock()
        new_session = None
        session = facts.session if facts.session and _SESSION.match(facts.session) else None
        if session is None and facts.token is None:
            session = new_session = secrets.token_urlsafe(24)
        bindings = self.bindings(
            RequestFacts(facts.address, facts.token, session, facts.ticket_text, facts.stamp)
        )
        ticket = self.parse(facts.ticket_text, bindings) or self._recalled(bindings)
        limited = max(
            self.binding_limiter.take(bindings[0].hex(), now),
            self.address_limiter.take(facts.address, now),
        )
        if limited > 0:
            return Verdict("rate_limited", ticket, math.ceil(limited), 0, limited, new_session)
        lane = LANE_NEW
        if ticket is not None and ticket.is_pass:
            if self.pass_valid(ticket):
                return self._admit(ticket, new_session)
            lane = LANE_PROGRESS  # a pass ran out in the middle of someone's work
        elif ticket is not None:
            if ticket.seq > self.snapshot.admitted[ticket.lane]:
                # Another process may have moved the frontier since our last look: never
                # send a holder away on a stale view (FIFO across processes).
                await self._refresh()
            if ticket.seq <= self.snapshot.admitted[ticket.lane]:
                return self._admit(ticket, new_session)
            return await self._hold_or_queue(ticket, new_session)
        wait = self.ticket_limiter.take(facts.address, now)
        if wait > 0:
            return Verdict("rate_limited", None, math.ceil(wait), 0, wait, new_session)
        lane, seq, at_once = await self._arrive(lane, facts.token if lane == LANE_NEW else None)
        now_ms = int(self.clock() * 1000)
        issued = self.keys.issue(lane=lane, seq=seq, binding=bindings[0], now_ms=now_ms)
        self._remember(issued)
        if at_once:
            return self._admit(issued, new_session)
        return await self._hold_or_queue(issued, new_session)

    async def _arrive(self, lane: int, token: str | None) -> tuple[int, int, bool]:
        """Decide the lane (from the bearer token, if any) and take a number: group
        commit, one batch at a time per process, and the arrivals that meet while it runs
        go together, in their order, in the next. Returns (lane, number, admitted now)."""
        future: asyncio.Future[tuple[int, int, bool]] = asyncio.get_running_loop().create_future()
        self._arrivals.append(Arrival(lane, token, future))
        if self._arriving is None or self._arriving.done():
            self._arriving = asyncio.ensure_future(self._take_numbers())
        return await future

    async def _take_numbers(self) -> None:
        while self._arrivals:
            batch = self._arrivals[:ARRIVALS_PER_BATCH]
            del self._arrivals[:ARRIVALS_PER_BATCH]
            now_ms = int(self.clock() * 1000)
            try:
                lanes, taken, snapshot = await asyncio.to_thread(
                    self._classify_and_arrive, batch, now_ms
                )
            except asyncio.CancelledError:  # shutting down: nobody is left waiting forever
                for arrival in [*batch, *self._arrivals]:
                    arrival.future.cancel()
                self._arrivals.clear()
                raise
            except Exception as error:  # each arrival fails as it would have alone
                for arrival in batch:
                    if not arrival.future.done():
                        arrival.future.set_exception(error)
                continue
            self._accept_snapshot(snapshot)
            for arrival, lane, (seq, at_once) in zip(batch, lanes, taken, strict=True):
                if not arrival.future.done():
                    arrival.future.set_result((lane, seq, at_once))

    def _classify_and_arrive(
        self, batch: list[Arrival], now_ms: int
    ) -> tuple[list[int], list[tuple[int, bool]], Snapshot]:
        tokens = {arrival.token for arrival in batch if arrival.token is not None}
        lane_of_token: dict[str, int] = {}
        if tokens:
            try:
                lane_of_token = self.classify(tokens)
            except Exception:  # a busy database never turns a wait into a 5xx: lane new
                log.warning("classifying %d arrivals failed; they wait as new", len(tokens))
        lanes = [
            lane_of_token.get(arrival.token, arrival.lane) if arrival.token else arrival.lane
            for arrival in batch
        ]
        taken, snapshot = self.store.arrive_many(lanes, now_ms=now_ms)
        return lanes, taken, snapshot

    async def _hold_or_queue(self, ticket: Ticket, session: str | None) -> Verdict:
        """Hold a request whose turn is due within `hold_s` (a bounded number of them);
        anyone else is told when to come back."""
        hold_s = self.settings.hold_s
        if (
            hold_s <= 0
            or self.held >= HELD_PER_SLOT * self.slots.limit
            or self.eta_s(self.position_of(ticket)) > hold_s
        ):
            return self._queued(ticket, session)
        self._loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = self._loop.create_future()
        holder = (ticket.lane, ticket.seq, turn)
        self._holders.add(holder)
        self._wake_holders()  # the frontier may have passed it since the caller looked
        started = time.monotonic()
        try:
            await asyncio.wait([turn], timeout=hold_s)
        finally:
            self._holders.discard(holder)
        if turn.done():
            verdict = self._admit(ticket, session)
            held_ms = int((time.monotonic() - started) * 1000)
            return Verdict("admit", verdict.ticket, 0, 0, 0.0, session, held_ms)
        return self._queued(ticket, session)

    def _wake_holders(self) -> None:
        """In the event loop: let in every holder the frontier has passed."""
        admitted = self.snapshot.admitted
        for lane, seq, turn in list(self._holders):
            if seq <= admitted[lane] and not turn.done():
                turn.set_result(None)

    @property
    def held(self) -> int:
        return len(self._holders)

    def queue_view(self, ticket: Ticket | None) -> dict[str, object]:
        """What `GET /api/v1/queue` answers: from memory only."""
        snapshot = self.snapshot
        base: dict[str, object] = {
            "queue_length": snapshot.queue_length,
            "queue_by_lane": {
                name: snapshot.waiting(lane)
                for lane, name in enumerate(("progress", "paid", "new"))
            },
            "admission_rate_per_s": round(self.global_rate_per_s(), 3),
            "new_arrival_eta_s": round(self.new_arrival_eta_s(), 1),
        }
        now = self.clock()
        if ticket is None:
            return {"ticket_state": "none", **base}
        if ticket.is_pass:
            state = "admitted" if self.pass_valid(ticket) else "expired"
            return {
                "ticket_state": state,
                "lane": ticket.lane_name,
                "position": 0,
                "eta_s": 0.0,
                "retry_after_s": 0,
                "retry_at": _iso(now),
                **base,
            }
        if ticket.seq <= snapshot.admitted[ticket.lane]:
            return {
                "ticket_state": "admitted",
                "lane": ticket.lane_name,
                "position": 0,
                "eta_s": 0.0,
                "retry_after_s": 0,
                "retry_at": _iso(now),
                "seq": ticket.seq,
                **base,
            }
        position = self.position_of(ticket)
        eta = self.eta_s(position)
        retry = retry_after_for(eta, self.settings.hold_s)
        return {
            "ticket_state": "waiting",
            "lane": ticket.lane_name,
            "seq": ticket.seq,
            "position": position,
            "eta_s": round(eta, 1),
            "retry_after_s": retry,
            "retry_at": _iso(now + retry),
            "waited_s": round(max(0.0, now - ticket.issued_ms / 1000), 1),
            **base,
        }

    # --- counters for the status page ----------------------------------------------

    def count_response(self, status: int) -> None:
        minute_ms = int(self.clock() // 60 * 60_000)
        if minute_ms != self.minute.minute_ms:
            self.flush_pending = self.minute
            self.minute = MinuteCounters(minute_ms=minute_ms)
        self.minute.requests += 1
        if status >= 500:
            self.minute.errors_5xx += 1
        elif status == 429:
            self.minute.rejected_429 += 1

    flush_pending: MinuteCounters | None = None

    def flush_samples(self) -> None:
        """Blocking: write this process's minute counters (from a thread)."""
        pending, self.flush_pending = self.flush_pending, None
        for counters in (pending, self.minute):
            if counters is None or counters.minute_ms == 0:
                continue
            self.store.record_sample(
                Sample(
                    minute_ms=counters.minute_ms,
                    process=self.process,
                    requests=counters.requests,
                    errors_5xx=counters.errors_5xx,
                    rejected_429=counters.rejected_429,
                    queue_max=counters.queue_max,
                    wait_s_max=counters.wait_s_max,
                )
            )


def _iso(unix_s: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(unix_s, UTC).replace(microsecond=0).isoformat()
