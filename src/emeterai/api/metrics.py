"""Prometheus metrics. With several workers, prometheus_client's multiprocess mode sums
the processes' counters, histograms and gauges (`emeterai serve` gives the workers a
fresh PROMETHEUS_MULTIPROC_DIR); the queue length comes from the shared store instead."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from emeterai.admission.store import Snapshot
from emeterai.admission.tickets import LANES
from emeterai.db import WRITE_LOCK

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    def __init__(self) -> None:
        # A registry per app: tests build many apps in one process.
        self.registry = CollectorRegistry()
        registry = self.registry
        self.responses = Counter(
            "emeterai_http_responses",
            "HTTP responses by status and problem code.",
            ["status", "code"],
            registry=registry,
        )
        self.stamp_latency = Histogram(
            "emeterai_stamp_latency_seconds",
            "Latency of admitted POST /api/v1/stamps requests, slot wait included.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.admitted = Counter(
            "emeterai_admitted", "Protected requests admitted.", ["lane"], registry=registry
        )
        self.rate = Gauge(
            "emeterai_admission_rate_per_s",
            "The admission rate the controllers set (summed over processes).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.capacity = Gauge(
            "emeterai_capacity_estimate_per_s",
            "People per second the processes can serve, measured while saturated (summed"
            " over processes; 0 until measured).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.completed = Gauge(
            "emeterai_protected_completed_per_s",
            "Protected requests completed per second, last 5 s (summed over processes).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.demand = Gauge(
            "emeterai_admission_demand",
            "Work in flight per slot, smoothed: the controller's signal (per process).",
            multiprocess_mode="liveall",
            registry=registry,
        )
        self.slots = Gauge(
            "emeterai_protected_slots",
            "Protected requests a process takes at once, as the latency allows (summed).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.inflight = Gauge(
            "emeterai_inflight",
            "Requests in flight by kind (summed over processes).",
            ["kind"],
            multiprocess_mode="livesum",
            registry=registry,
        )

        # SQLite's one write lock, which bounds the server there (docs/performance.md).
        self.write_transactions = Counter(
            "emeterai_db_write_transactions",
            "Write transactions on the SQLite database (0 on PostgreSQL).",
            registry=registry,
        )
        self.write_lock_wait = Counter(
            "emeterai_db_write_lock_wait_seconds",
            "Time spent waiting for SQLite's write lock, summed over transactions.",
            registry=registry,
        )
        self.write_lock_held = Counter(
            "emeterai_db_write_lock_held_seconds",
            "Time SQLite's write lock was held: its rate is the lock's busy share.",
            registry=registry,
        )
        self._write_lock_seen = WRITE_LOCK.totals()

    def observe_write_lock(self) -> None:
        """Add what this process's write-lock totals grew by since the last call."""
        totals, seen = WRITE_LOCK.totals(), self._write_lock_seen
        self._write_lock_seen = totals
        counters = (self.write_transactions, self.write_lock_wait, self.write_lock_held)
        for counter, now, before in zip(counters, totals, seen, strict=True):
            if now > before:
                counter.inc(now - before)

    def exposition(self, snapshot: Snapshot | None) -> bytes:
        if multiprocess_mode():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            text = generate_latest(registry)
        else:
            text = generate_latest(self.registry)
        if snapshot is None:
            return text
        lines = [
            "# HELP emeterai_queue_length Tickets waiting, by lane (from the shared store).",
            "# TYPE emeterai_queue_length gauge",
        ]
        lines += [
            f'emeterai_queue_length{{lane="{name}"}} {snapshot.waiting(lane)}'
            for lane, name in enumerate(LANES)
        ]
        lines += [
            "# HELP emeterai_queue_issued_total Tickets ever issued, by lane.",
            "# TYPE emeterai_queue_issued_total counter",
        ]
        lines += [
            f'emeterai_queue_issued_total{{lane="{name}"}} {snapshot.issued[lane]}'
            for lane, name in enumerate(LANES)
        ]
        return text + ("\n".join(lines) + "\n").encode()
