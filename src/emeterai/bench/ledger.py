"""`emeterai bench ledger`: ledger transfers per second, with 1 and with N clients.

Two operations, each through the real use cases on the chosen database:
- purchase: a channel order, then its signed payment confirmation (`handle_webhook`):
  one transaction that records the payment and makes the top-up, sale, duty and fee
  transfers;
- reserve/post: the stamp's pair, a pending transfer in one transaction and its posting
  in another (signing left out: this measures the ledger).

Each client is a thread with its own user; clients share one channel, as real buyers do.
Machines here are shared and noisy: compare series, not absolute figures.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from emeterai.accounts import create_account
from emeterai.channels import signing
from emeterai.channels.management import create_channel, lock_channel
from emeterai.channels.orders import create_order
from emeterai.channels.payments import handle_webhook
from emeterai.config import Settings
from emeterai.db import transaction
from emeterai.ledger import post_pending, reserve
from emeterai.ledger.models import Transfer
from emeterai.migrate import upgrade_database
from emeterai.quota import add_quota, quota_accounts
from emeterai.runtime import Runtime, build_runtime


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def _transfers(runtime: Runtime) -> int:
    with transaction(runtime.sessions) as session:
        return int(session.scalar(select(func.count()).select_from(Transfer)) or 0)


def _series(
    runtime: Runtime,
    operation: str,
    clients: int,
    seconds: float,
    make_worker: Callable[[int], Callable[[], None]],
) -> dict[str, Any]:
    workers = [make_worker(index) for index in range(clients)]
    for work in workers:
        work()  # warm up: connections, caches
    before = _transfers(runtime)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    deadline = time.perf_counter() + seconds
    start = threading.Barrier(clients)

    def run(index: int) -> None:
        start.wait()
        while time.perf_counter() < deadline:
            begin = time.perf_counter()
            workers[index]()
            latencies[index].append((time.perf_counter() - begin) * 1000)

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(run, range(clients)))
    elapsed = time.perf_counter() - began
    flat = [value for values in latencies for value in values]
    transfers = _transfers(runtime) - before
    return {
        "operation": operation,
        "clients": clients,
        "ops": len(flat),
        "seconds": round(elapsed, 3),
        "ops_per_s": len(flat) / elapsed,
        "transfers": transfers,
        "transfers_per_s": transfers / elapsed,
        "p50_ms": statistics.median(flat) if flat else 0.0,
        "p99_ms": _percentile(flat, 0.99) if flat else 0.0,
    }


def run_ledger_bench(
    *,
    database_url: str | None,
    seconds: float,
    clients: list[int],
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="emeterai-bench-ledger-") as temporary:
        data_dir = Path(temporary)
        url = database_url or f"sqlite:///{data_dir / 'bench.db'}"
        upgrade_database(url)
        settings = Settings(
            data_dir=data_dir,
            database_url=url,
            key_passphrase=secrets.token_urlsafe(24),  # type: ignore[arg-type]
        )
        runtime = build_runtime(settings)
        try:
            return _run(runtime, settings, seconds=seconds, clients=clients, progress=progress)
        finally:
            runtime.close()


def _run(
    runtime: Runtime,
    settings: Settings,
    *,
    seconds: float,
    clients: list[int],
    progress: Callable[[str], None],
) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    with transaction(runtime.sessions) as session:
        now = runtime.clock.now()
        created = create_channel(
            session, settings, f"bench-{tag}", kind="shop", now=now, fee_rupiah=1_000
        )
        channel_id = created.channel.id
        users = []
        for index in range(max(clients)):
            account = create_account(session, f"bench-{tag}-{index}@example.id", now=now)
            add_quota(session, account.id, 1_000_000, reference=f"bench-{tag}-{index}", now=now)
            users.append((account.id, quota_accounts(session, account.id, now=now)))
    secret = created.webhook_secret

    def purchase(index: int) -> Callable[[], None]:
        account_id = users[index][0]

        def work() -> None:
            with transaction(runtime.sessions) as session:
                order = create_order(
                    session,
                    lock_channel(session, channel_id),
                    account_id,
                    1,
                    now=runtime.clock.now(),
                )
                order_id, amount = order.id, order.amount_rupiah
            body = json.dumps(
                {
                    "order_id": order_id,
                    "payment_reference": f"pay-{order_id}",
                    "amount_rupiah": amount,
                }
            ).encode()
            timestamp = int(time.time())
            handle_webhook(
                runtime.sessions,
                settings,
                runtime.clock,
                body=body,
                timestamp_header=str(timestamp),
                signature_header=signing.sign(secret, timestamp, body),
            )

        return work

    def reserve_post(index: int) -> Callable[[], None]:
        accounts = users[index][1]

        def work() -> None:
            with transaction(runtime.sessions) as session:
                now = runtime.clock.now()
                pending = reserve(
                    session,
                    debit_account_id=accounts.quota.id,
                    credit_account_id=accounts.used.id,
                    amount=1,
                    now=now,
                    expires_at=now + timedelta(seconds=300),
                    idempotency_key=f"bench:{secrets.token_hex(10)}",
                )
                pending_id = pending.id
            with transaction(runtime.sessions) as session:
                post_pending(session, pending_id, now=runtime.clock.now())

        return work

    series = []
    for operation, factory in (("purchase", purchase), ("reserve/post", reserve_post)):
        for count in clients:
            progress(f"{operation} with {count} client(s)")
            series.append(_series(runtime, operation, count, seconds, factory))
    url = runtime.settings.resolved_database_url
    return {
        "database": "postgresql" if url.startswith("postgresql") else "sqlite",
        "cpus": os.cpu_count() or 1,
        "seconds_per_series": seconds,
        "series": series,
    }
