"""Outflow follows measured capacity: a controller that targets the work in flight.

Each process measures what it finished itself and sets its own admission rate; the
shared frontier advances at the sum of the processes' rates (see store.tick).

The signal is the process's protected work in flight: slots taken plus admitted requests
waiting for one, time-weighted over the last second, as a fraction of the slots. Below
`DEMAND_LOW` the CPU has room and people are waiting: admit more, quickly. Above
`DEMAND_HIGH`, or when admitted requests found no slot (`BUSY`), admitted work is piling
up: admit less, gently. The latency of admitted stamps is the guard rail: over
`SETPOINT` of the target, cut hard. See docs/admission.md.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["CapacityController", "ControllerState", "percentile"]

LATENCY_WINDOW_S = 5.0
BUSY_WINDOW_S = 3.0
SAMPLES_MAX = 4096
# The p99 the controller steers by, as a fraction of the target: headroom for the lag
# between an admission and the work it brings.
SETPOINT = 0.6
LATENCY_DECREASE = 0.75
BACKLOG_DECREASE = 0.9
DECREASE_COOLDOWN_S = 2.0
INCREASE = 1.15
PROBE = 1.03
INCREASE_MIN_PER_S = 0.05
BUSY_SHARE_MAX = 0.05
DEMAND_LOW = 0.9
DEMAND_HIGH = 1.6
# Raise the rate only while the people it lets in actually come: holders told to come
# back later may still be asleep when the frontier passes them, and a rate raised on the
# idle slots they leave would bring them all at once when they wake.
SHOWN_MIN = 0.6
STAMP_SAMPLES_MIN = 5


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

    def _increase(self, factor: float) -> None:
        step = max(INCREASE_MIN_PER_S, (factor - 1) * self.rate_per_s)
        self.rate_per_s = min(self.rate_max_per_s, self.rate_per_s + step)

    def update(
        self, now: float, *, waiting: int, utilisation: float, backlog: float = 0.0
    ) -> ControllerState:
        """Called about once a second with the line's length, and the mean share of slots
        taken and of admitted requests waiting for one (fractions of the slots)."""
        self._trim(now)
        p99 = self.p99_s()
        attempts = len(self._admitted) + len(self._busy)
        busy_share = len(self._busy) / attempts if attempts else 0.0
        demand = utilisation + backlog
        cooled = now - self._last_decrease >= DECREASE_COOLDOWN_S
        decision = "hold"
        if self.pinned_per_s is not None:
            decision = "pinned"
        elif p99 > SETPOINT * self.target_s:
            if cooled:
                self._decrease(LATENCY_DECREASE, now)
                decision = "decrease"
        elif busy_share > BUSY_SHARE_MAX or demand > DEMAND_HIGH:
            if cooled:
                self._decrease(BACKLOG_DECREASE, now)
                decision = "decrease"
        elif (
            waiting > 0
            and not self._busy
            and len(self._shown) / LATENCY_WINDOW_S >= SHOWN_MIN * self.rate_per_s
        ):
            if demand < DEMAND_LOW:
                self._increase(INCREASE)
                decision = "increase"
            elif p99 < SETPOINT * self.target_s / 2:
                self._increase(PROBE)
                decision = "probe"
        self.last = ControllerState(
            rate_per_s=self.rate_per_s,
            p99_s=p99,
            completed_per_s=self.completed_per_s(),
            busy_share=busy_share,
            demand=demand,
            decision=decision,
        )
        return self.last
