"""A bounded number of slots per process, with a bounded, time-limited wait for one."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

__all__ = ["Slots"]


class Slots:
    """Like asyncio.Semaphore, but a waiter gives up after `wait_s`, and at most
    `waiters_max` wait at all: nothing builds an unbounded queue in memory."""

    def __init__(
        self,
        limit: int,
        *,
        waiters_max: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or waiters_max < 0:
            raise ValueError("at least one slot, and a non-negative waiter bound")
        self.limit = limit
        self.waiters_max = waiters_max
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Time-weighted load since the last `load()`: the controller's view of the work
        # in flight (slots taken, and admitted requests waiting for one).
        self._clock = clock
        self._since = self._mark = clock()
        self._in_use_area = 0.0
        self._waiting_area = 0.0

    def _account(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._mark)
        self._in_use_area += elapsed * self.in_use
        self._waiting_area += elapsed * len(self._waiters)
        self._mark = now

    def load(self) -> tuple[float, float]:
        """(mean slots taken, mean requests waiting), each as a fraction of the limit,
        since the previous call."""
        self._account()
        span = self._mark - self._since
        if span <= 0:
            return self.in_use / self.limit, len(self._waiters) / self.limit
        in_use = self._in_use_area / span / self.limit
        waiting = self._waiting_area / span / self.limit
        self._since = self._mark
        self._in_use_area = self._waiting_area = 0.0
        return in_use, waiting

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def resize(self, limit: int) -> None:
        """A new number of slots. More wakes waiters at once; fewer takes effect as the
        requests in flight finish (none is interrupted)."""
        if limit < 1:
            raise ValueError("at least one slot")
        self._account()
        self.waiters_max = self.waiters_max // self.limit * limit
        self.limit = limit
        while self._waiters and self.in_use < self.limit:
            future = self._waiters.popleft()
            if not future.done():
                self.in_use += 1
                future.set_result(None)

    async def acquire(self, wait_s: float) -> bool:
        if self.in_use < self.limit and not self._waiters:
            self._account()
            self.in_use += 1
            return True
        if len(self._waiters) >= self.waiters_max or wait_s <= 0:
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._account()
        self._waiters.append(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout=wait_s)
            return True
        except TimeoutError:
            if future.done() and not future.cancelled():
                return True  # handed a slot just as the wait ran out: keep it
            future.cancel()
            return False
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            else:
                future.cancel()
            raise
        finally:
            if future in self._waiters:
                self._account()
                self._waiters.remove(future)

    def release(self) -> None:
        self._account()
        if self.in_use <= 0:
            raise RuntimeError("released a slot that was not held")
        while self._waiters and self.in_use <= self.limit:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)  # the slot passes straight to the waiter
                return
        self.in_use -= 1
