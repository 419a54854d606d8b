"""`emeterai bench stamp`: stamping speed against plain pyHanko, measured in one run.

Four series per document, all with the same issuer key:
- baseline: pyHanko signing as its documentation shows (the yardstick, ratio 1.0);
- signer: our tuned signer alone, no database;
- in-process: the whole use case (validate, reserve, sign, post) on the chosen database;
- http: the same through a real `emeterai serve` on loopback, with concurrent clients.
Machines here are shared and noisy, so read the ratios, not the absolute figures.
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from emeterai.accounts import create_account, issue_token
from emeterai.config import Settings
from emeterai.db import transaction
from emeterai.migrate import upgrade_database
from emeterai.pdf import Placement, StampSigner
from emeterai.pdf.baseline import sign_plain_pyhanko
from emeterai.pdf.samples import letter_a4, scanned_page
from emeterai.pki import create_issuer_pki
from emeterai.quota import add_quota
from emeterai.runtime import build_runtime
from emeterai.serials import generate_serial
from emeterai.stamping.service import StampRequest, issue_stamp
from emeterai.stamping.signing import InProcessSigner, load_material

PLACEMENT = Placement(page=1, x_pt=400.0, y_pt=60.0)
SERVER_START_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Series:
    method: str
    document: str
    count: int
    docs_per_s: float
    p50_ms: float
    p99_ms: float
    ratio_to_baseline: float = 0.0


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def _measure(method: str, document: str, count: int, work: Callable[[], object]) -> Series:
    work()  # warm up: imports, caches, first connection
    latencies: list[float] = []
    started = time.perf_counter()
    for _ in range(count):
        begin = time.perf_counter()
        work()
        latencies.append((time.perf_counter() - begin) * 1000)
    elapsed = time.perf_counter() - started
    return Series(
        method=method,
        document=document,
        count=count,
        docs_per_s=count / elapsed,
        p50_ms=statistics.median(latencies),
        p99_ms=_percentile(latencies, 0.99),
    )


def _measure_http(
    document_name: str, document: bytes, count: int, base_url: str, token: str, concurrency: int
) -> Series:
    def one(_: int) -> float:
        begin = time.perf_counter()
        response = httpx.post(
            f"{base_url}/api/v1/stamps",
            files={"file": ("doc.pdf", document, "application/pdf")},
            data={"page": "1", "x": str(PLACEMENT.x_pt), "y": str(PLACEMENT.y_pt)},
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )
        if response.status_code != 200:
            raise RuntimeError(f"stamp failed: {response.status_code} {response.text[:200]}")
        return (time.perf_counter() - begin) * 1000

    one(0)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, range(count)))
    elapsed = time.perf_counter() - started
    return Series(
        method=f"http x{concurrency}",
        document=document_name,
        count=count,
        docs_per_s=count / elapsed,
        p50_ms=statistics.median(latencies),
        p99_ms=_percentile(latencies, 0.99),
    )


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start_server(env: dict[str, str], port: int, workers: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "emeterai", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the benchmark server exited at start")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the benchmark server did not become ready")


def run_stamp_bench(
    *,
    count: int,
    database_url: str | None,
    http: bool,
    http_concurrency: int,
    server_workers: int,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="emeterai-bench-"))
    passphrase = secrets.token_urlsafe(24)
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url or f"sqlite:///{data_dir / 'bench.db'}",
        key_passphrase=passphrase,  # type: ignore[arg-type]
    )
    create_issuer_pki(settings.pki_dir, passphrase.encode())
    upgrade_database(settings.resolved_database_url)
    runtime = build_runtime(settings)
    now = datetime.now(UTC)
    email = f"bench-{secrets.token_hex(4)}@example.id"
    with transaction(runtime.sessions) as session:
        account = create_account(session, email, now=now)
        token = issue_token(session, account, now=now).token
        add_quota(session, account.id, 10 * count + 100, reference=f"bench-{email}", now=now)
    material = load_material(settings)
    tuned = StampSigner(material)
    signer = InProcessSigner(material)
    documents = {"a4-letter": letter_a4(), "scanned-800kb": scanned_page()}
    series: list[Series] = []

    def stamp_through_use_case(document: bytes) -> object:
        request = StampRequest(account_id=account.id, document=document, placement=PLACEMENT)
        return issue_stamp(
            runtime.sessions,
            request,
            sign=signer,
            blobs=runtime.blobs,
            settings=settings,
            clock=runtime.clock,
        )

    def sign_only(document: bytes) -> bytes:
        serial = generate_serial()
        return tuned.sign(
            document, serial=serial, verify_url=settings.verify_url(serial), placement=PLACEMENT
        )

    for name, document in documents.items():
        progress(f"baseline pyHanko on {name}")
        baseline = partial(sign_plain_pyhanko, document, material, PLACEMENT)
        series.append(_measure("baseline pyhanko", name, count, baseline))
        progress(f"tuned signer on {name}")
        series.append(_measure("signer only", name, count, partial(sign_only, document)))
        progress(f"whole use case in-process on {name}")
        series.append(
            _measure("in-process", name, count, partial(stamp_through_use_case, document))
        )
    runtime.close()
    if http:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMETERAI_")}
        env.update(
            EMETERAI_DATA_DIR=str(data_dir),
            EMETERAI_DATABASE_URL=settings.resolved_database_url,
            EMETERAI_KEY_PASSPHRASE=passphrase,
        )
        port = _free_port()
        progress(f"starting a server with {server_workers} worker(s)")
        server = _start_server(env, port, server_workers)
        try:
            for name, document in documents.items():
                progress(f"http on {name}")
                series.append(
                    _measure_http(
                        name, document, count, f"http://127.0.0.1:{port}", token, http_concurrency
                    )
                )
        finally:
            server.terminate()
            server.wait(timeout=30)
    baselines = {s.document: s.docs_per_s for s in series if s.method == "baseline pyhanko"}
    rated = [
        Series(**{**asdict(s), "ratio_to_baseline": s.docs_per_s / baselines[s.document]})
        for s in series
    ]
    return {
        "benchmark": "stamp",
        "measured_at": now.isoformat(),
        "cpus": os.cpu_count(),
        "database": "postgresql" if database_url else "sqlite",
        "count_per_series": count,
        "series": [asdict(s) for s in rated],
    }
