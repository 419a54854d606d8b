"""Token buckets per key, in a bounded LRU: retry storms and bots cost the server little
memory and never push anyone back in the line."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

__all__ = ["KeyedRateLimiter"]


class KeyedRateLimiter:
    def __init__(self, *, rate_per_s: float, burst: float, keys_max: int) -> None:
        if rate_per_s <= 0 or burst < 1 or keys_max < 1:
            raise ValueError("a limiter needs a positive rate, a burst of at least 1, and room")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.keys_max = keys_max
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """Take one token: 0.0 if allowed, else the seconds until one is available."""
        with self._lock:
            tokens, stamp = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - stamp) * self.rate_per_s)
            if tokens >= 1.0:
                wait = 0.0
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate_per_s
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.keys_max:
                self._buckets.popitem(last=False)
            return wait


def retry_after_s(wait_s: float) -> int:
    return max(1, math.ceil(wait_s))
