"""Outflow follows measured capacity: an AIMD controller on the latency of admitted work.

Each process measures what it finished itself and sets its own admission rate; the
shared frontier advances at the sum of the processes' rates (see store.tick).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["CapacityController", "ControllerState", "percentile"]

WINDOW_S = 10.0
SAMPLES_MAX = 4096
DECREASE_FACTOR = 0.85
DECREASE_COOLDOWN_S = 2.0
INCREASE_FRACTION = 0.05
INCREASE_MIN_PER_S = 0.05
BUSY_SHARE_MAX = 0.05
SATURATED_UTILISATION = 0.8
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
        self._last_decrease = -math.inf
        self.last = ControllerState(self.rate_per_s, 0.0, 0.0, 0.0, "start")

    def observe(self, latency_s: float, *, stamp: bool, now: float) -> None:
        """A protected request finished (any status but BUSY) after latency_s."""
        self._latencies.append((now, latency_s, stamp))

    def observe_admitted(self, now: float) -> None:
        self._admitted.append(now)

    def observe_busy(self, now: float) -> None:
        self._busy.append(now)

    def _trim(self, now: float) -> None:
        horizon = now - WINDOW_S
        for queue in (self._busy, self._admitted):
            while queue and queue[0] < horizon:
                queue.popleft()
        while self._latencies and self._latencies[0][0] < horizon:
            self._latencies.popleft()

    def p99_s(self) -> float:
        stamps = [latency for _, latency, stamp in self._latencies if stamp]
        if len(stamps) >= STAMP_SAMPLES_MIN:
            return percentile(stamps, 0.99)
        return percentile([latency for _, latency, _ in self._latencies], 0.99)

    def completed_per_s(self) -> float:
        return len(self._latencies) / WINDOW_S

    def update(self, now: float, *, waiting: int, utilisation: float) -> ControllerState:
        """Called about once a second with the queue length and the mean slot utilisation."""
        self._trim(now)
        p99 = self.p99_s()
        attempts = len(self._admitted) + len(self._busy)
        busy_share = len(self._busy) / attempts if attempts else 0.0
        decision = "hold"
        if self.pinned_per_s is not None:
            decision = "pinned"
        elif (p99 > self.target_s or busy_share > BUSY_SHARE_MAX) and (
            now - self._last_decrease >= DECREASE_COOLDOWN_S
        ):
            self.rate_per_s = max(self.rate_min_per_s, self.rate_per_s * DECREASE_FACTOR)
            self._last_decrease = now
            decision = "decrease"
        elif (
            waiting > 0
            and p99 <= self.target_s
            and not self._busy
            and (utilisation < SATURATED_UTILISATION or p99 < self.target_s / 2)
        ):
            step = max(INCREASE_MIN_PER_S, INCREASE_FRACTION * self.rate_per_s)
            self.rate_per_s = min(self.rate_max_per_s, self.rate_per_s + step)
            decision = "increase"
        self.last = ControllerState(
            rate_per_s=self.rate_per_s,
            p99_s=p99,
            completed_per_s=self.completed_per_s(),
            busy_share=busy_share,
            decision=decision,
        )
        return self.last
