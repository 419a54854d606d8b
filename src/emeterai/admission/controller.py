"""Outflow follows measured capacity: a controller that targets the work in flight.

Each process measures what it finished itself and sets its own admission rate; the
shared frontier advances at the sum of the processes' rates (see store.tick).

The signal is the process's protected work in flight: slots taken plus admitted requests
waiting for one, time-weighted, as a fraction of the slots (its "demand"). The work is
CPU-bound, so the process is at capacity when every slot is taken and a little work waits
for the next: the controller steers the demand towards `DEMAND_TARGET`, in steps
proportional to the (logarithmic) error. The steps are small because admitted people
bring their work seconds after the frontier passes them: a controller faster than that
lag would oscillate. The latency of admitted stamps is the guard rail: over `SETPOINT`
of the target, cut hard. See docs/admission.md.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["CapacityController", "ControllerState", "SlotSizer", "percentile"]

LATENCY_WINDOW_S = 5.0
BUSY_WINDOW_S = 3.0
SAMPLES_MAX = 4096
# The p99 the controller steers by, as a fraction of the target: headroom for the lag
# between an admission and the work it brings.
SETPOINT = 0.75
LATENCY_DECREASE = 0.85
DECREASE_COOLDOWN_S = 2.0
# Every slot taken, and as many requests again waiting for one.
DEMAND_TARGET = 2.0
DEMAND_FLOOR = 0.2
DEMAND_SMOOTHING = 0.6  # weight of the newest second
# Each second: rate *= (target / demand) ** GAIN, within [STEP_MIN, STEP_MAX]. With work
# arriving some 4 s after its admission, a gain of 0.1 per second settles without
# ringing (an integrator with a delay is stable while gain x delay < pi / 2).
GAIN = 0.1
STEP_MIN = 0.9
STEP_MAX = 1.1
INCREASE_MIN_PER_S = 0.05
# Slots mostly idle while people wait and come (start-up, or back from a lull): the rate
# is far below what the process serves. It then grows up to 30% a second, and the ceiling
# with it, rather than 10% and 8%: from the initial rate to a 2-core machine's capacity in
# about 4 s, not 11 s (docs/performance.md, Spike). Overshoot stays bounded: the rate
# grows only while those it lets in come (SHOWN_MIN), and slots cap the work in flight.
IDLE_DEMAND = 0.5
GAIN_IDLE = 0.25
STEP_MAX_IDLE = 1.3
# While the slots are saturated, what the process completes is its capacity. In people
# per second: completed protected requests / requests per admitted person (a long-run
# average, ~1 minute). Steering by demand stays within [FLOOR, CEILING] x that estimate,
# so that draining a backlog never drives the rate far below what the process serves,
# nor a lull far above it. Work arrives seconds after its admission; without these
# bounds the rate swung 5x in 20 s cycles (docs/performance.md, Spike).
SATURATED = 1.0
CAPACITY_SMOOTHING = 0.2
PER_PERSON_SMOOTHING = 1 / 60
FLOOR = 0.95
CEILING = 1.15
CEILING_GROWTH = 1.08  # at the ceiling and still not saturated: the estimate was low
# Raise the rate only while the people it lets in actually come: holders told to come
# back later may still be asleep when the frontier passes them, and a rate raised on the
# idle slots they leave would bring them all at once when they wake.
SHOWN_MIN = 0.6
STAMP_SAMPLES_MIN = 5
# Slots follow the latency headroom (`SlotSizer`): one more while the slots are full and
# the stamp p99 is under GROW_BELOW of the target, one fewer once it passes SETPOINT.
# Growth waits for latencies measured at the new size; a cut waits less.
GROW_BELOW = 0.4
GROW_COOLDOWN_S = 5.0
SHRINK_COOLDOWN_S = 2.0


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


@dataclass(frozen=True)
class ControllerState:
    rate_per_s: float
    p99_s: float
    completed_per_s: float
    busy_share: float
    demand: float
    decision: str


class CapacityController:
    def __init__(
        self,
        *,
        target_s: float,
        rate_initial_per_s: float,
        rate_min_per_s: float,
        rate_max_per_s: float,
        pinned_per_s: float | None = None,
    ) -> None:
        if not 0 < rate_min_per_s <= rate_max_per_s:
            raise ValueError("the rate bounds must satisfy 0 < min <= max")
        self.target_s = target_s
        self.rate_min_per_s = rate_min_per_s
        self.rate_max_per_s = rate_max_per_s
        self.pinned_per_s = pinned_per_s
        self.rate_per_s = pinned_per_s or min(
            rate_max_per_s, max(rate_min_per_s, rate_initial_per_s)
        )
        self._latencies: deque[tuple[float, float, bool]] = deque(maxlen=SAMPLES_MAX)
        self._busy: deque[float] = deque(maxlen=SAMPLES_MAX)
        self._admitted: deque[float] = deque(maxlen=SAMPLES_MAX)
        self._completed: deque[float] = deque(maxlen=SAMPLES_MAX)
        self._shown: deque[float] = deque(maxlen=SAMPLES_MAX)
        self._last_decrease = -math.inf
        self._demand: float | None = None
        self._shown_avg = 0.0
        self._first_shown: float | None = None
        self._completed_avg = 0.0
        self.capacity_per_s: float | None = None  # people per second, once measured
        self.last = ControllerState(self.rate_per_s, 0.0, 0.0, 0.0, 0.0, "start")

    def observe(self, latency_s: float, *, stamp: bool, now: float) -> None:
        """A protected request finished (any status but BUSY) after latency_s."""
        self._latencies.append((now, latency_s, stamp))
        self._completed.append(now)

    def observe_admitted(self, now: float) -> None:
        self._admitted.append(now)

    def observe_shown(self, now: float) -> None:
        """A ticket holder came and was let in (its ticket became a pass)."""
        self._shown.append(now)
        if self._first_shown is None:
            self._first_shown = now

    def observe_busy(self, now: float) -> None:
        self._busy.append(now)

    def _trim(self, now: float) -> None:
        for queue, window in (
            (self._busy, BUSY_WINDOW_S),
            (self._admitted, BUSY_WINDOW_S),
            (self._completed, LATENCY_WINDOW_S),
            (self._shown, LATENCY_WINDOW_S),
        ):
            while queue and queue[0] < now - window:
                queue.popleft()
        while self._latencies and self._latencies[0][0] < now - LATENCY_WINDOW_S:
            self._latencies.popleft()

    def stamp_p99_s(self, now: float) -> float | None:
        """The p99 of the stamps in the window; None until there are enough of them."""
        self._trim(now)
        stamps = [latency for _, latency, stamp in self._latencies if stamp]
        return percentile(stamps, 0.99) if len(stamps) >= STAMP_SAMPLES_MIN else None

    def p99_s(self) -> float:
        stamps = [latency for _, latency, stamp in self._latencies if stamp]
        if len(stamps) >= STAMP_SAMPLES_MIN:
            return percentile(stamps, 0.99)
        return percentile([latency for _, latency, _ in self._latencies], 0.99)

    def completed_per_s(self) -> float:
        return len(self._completed) / LATENCY_WINDOW_S

    def _decrease(self, factor: float, now: float) -> None:
        self.rate_per_s = max(self.rate_min_per_s, self.rate_per_s * factor)
        self._last_decrease = now
        # The next decision waits for latencies measured at the new rate.
        self._latencies.clear()

    def _per_person(self) -> float | None:
        """Protected requests per admitted person, a long-run average."""
        if self._shown_avg < 0.05 or self._completed_avg <= 0:
            return None
        return self._completed_avg / self._shown_avg

    def _shown_per_s(self, now: float) -> float:
        """People let in per second over the window, or since the first came if that is
        sooner: a process that has just started has not seen a whole window yet."""
        if self._first_shown is None:
            return 0.0
        return len(self._shown) / min(LATENCY_WINDOW_S, max(1.0, now - self._first_shown))

    def _measure_capacity(self, demand: float, now: float) -> None:
        shown = self._shown_per_s(now)
        self._shown_avg += PER_PERSON_SMOOTHING * (shown - self._shown_avg)
        self._completed_avg += PER_PERSON_SMOOTHING * (self.completed_per_s() - self._completed_avg)
        if demand < SATURATED:
            # The slots had room for everyone who came: the capacity is at least that. An
            # estimate taken in a brief rush at start-up would otherwise cap the ramp.
            if self.capacity_per_s is not None and shown > self.capacity_per_s:
                self.capacity_per_s = shown
            return
        per_person = self._per_person()
        if per_person is None:
            return
        measured = self.completed_per_s() / per_person
        if self.capacity_per_s is None:
            self.capacity_per_s = measured
        self.capacity_per_s += CAPACITY_SMOOTHING * (measured - self.capacity_per_s)

    def _steer(self, step: float, demand: float) -> None:
        change = self.rate_per_s * (step - 1)
        if step > 1:
            change = max(INCREASE_MIN_PER_S, change)
        rate = self.rate_per_s + change
        capacity = self.capacity_per_s
        if capacity is not None:
            if step < 1:
                rate = max(rate, min(self.rate_per_s, FLOOR * capacity))
            elif rate > CEILING * capacity:
                if demand < IDLE_DEMAND:
                    capacity = self.capacity_per_s = max(capacity * CEILING_GROWTH, rate / CEILING)
                elif demand < SATURATED:
                    self.capacity_per_s = capacity * CEILING_GROWTH
                rate = max(self.rate_per_s, min(rate, CEILING * capacity))
            else:
                # Back from a latency cut as soon as the work it built up has drained.
                rate = max(rate, FLOOR * capacity)
        self.rate_per_s = min(self.rate_max_per_s, max(self.rate_min_per_s, rate))

    def update(
        self, now: float, *, waiting: int, utilisation: float, backlog: float = 0.0
    ) -> ControllerState:
        """Called about once a second with the line's length, and the mean share of slots
        taken and of admitted requests waiting for one (fractions of the slots)."""
        self._trim(now)
        p99 = self.p99_s()
        attempts = len(self._admitted) + len(self._busy)
        busy_share = len(self._busy) / attempts if attempts else 0.0
        measured = utilisation + backlog
        if self._demand is None:
            self._demand = measured
        self._demand += DEMAND_SMOOTHING * (measured - self._demand)
        demand = self._demand
        self._measure_capacity(demand, now)
        decision = "hold"
        if self.pinned_per_s is not None:
            decision = "pinned"
        elif p99 > SETPOINT * self.target_s:
            if now - self._last_decrease >= DECREASE_COOLDOWN_S:
                self._decrease(LATENCY_DECREASE, now)
                decision = "decrease"
        elif waiting > 0:
            ratio = DEMAND_TARGET / max(demand, DEMAND_FLOOR)
            if demand < IDLE_DEMAND:
                step = min(STEP_MAX_IDLE, ratio**GAIN_IDLE)
            else:
                step = min(STEP_MAX, max(STEP_MIN, ratio**GAIN))
            shown = self._shown_per_s(now) >= SHOWN_MIN * self.rate_per_s
            if step < 1 or shown:
                self._steer(step, demand)
                decision = "increase" if step > 1 else "decrease"
        self.last = ControllerState(
            rate_per_s=self.rate_per_s,
            p99_s=p99,
            completed_per_s=self.completed_per_s(),
            busy_share=busy_share,
            demand=demand,
            decision=decision,
        )
        return self.last


class SlotSizer:
    """How much protected work a process takes at once: as much as it can finish within
    the latency target. It starts at `low` (one slot per signing process) and moves one
    slot at a time within [low, high], by the stamps' p99 while every slot is taken.
    SQLite's write lock or the CPUs saturate first on one machine or another; the
    latency shows either. With low == high the number is pinned."""

    def __init__(self, low: int, high: int) -> None:
        if not 1 <= low <= high:
            raise ValueError("the slot bounds must satisfy 1 <= low <= high")
        self.low, self.high = low, high
        self.limit = low
        self._changed_at = -math.inf

    def update(self, now: float, *, p99_s: float | None, target_s: float, demand: float) -> int:
        """Called with the controller, about once a second; returns the new limit."""
        if p99_s is None or self.low == self.high:
            return self.limit
        since = now - self._changed_at
        if p99_s > SETPOINT * target_s:
            if self.limit > self.low and since >= SHRINK_COOLDOWN_S:
                self.limit -= 1
                self._changed_at = now
        elif (
            p99_s < GROW_BELOW * target_s
            and demand >= SATURATED
            and self.limit < self.high
            and since >= GROW_COOLDOWN_S
        ):
            self.limit += 1
            self._changed_at = now
        return self.limit
