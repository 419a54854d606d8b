"""`emeterai bench bulk`: bulk throughput with 1, 2 and 4 worker processes on one PostgreSQL.

Each run starts `emeterai worker --processes N` as a real process, waits until every
worker says it is ready (keys loaded), submits one batch of the same one-page letter and
times the workers from the submission's commit to the last document (the submission
itself, which stores the documents and reserves their quota, is timed apart). Then it
checks, from the rows, that every document was stamped exactly once and that `audit`
passes. The scaling ratio is against the 1-worker run of the same invocation: the
machines here are shared and noisy, so read the ratios and the CPU count, not the
absolute figures.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from emeterai.accounts import create_account
from emeterai.audit import run_audit
from emeterai.config import Settings
from emeterai.db import transaction
from emeterai.jobs.config import JobSettings
from emeterai.jobs.intake import BulkDocument, Position
from emeterai.jobs.models import JobItem
from emeterai.jobs.service import BulkRequest, job_progress, submit_bulk
from emeterai.migrate import upgrade_database
from emeterai.pdf.samples import letter_a4
from emeterai.pki import create_issuer_pki
from emeterai.quota import add_quota
from emeterai.runtime import build_runtime
from emeterai.stamping.models import Stamp

DEFAULT_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
READY_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 1800.0
POLL_S = 0.05


def _scratch_database(server_url: str) -> str:
    name = f"emeterai_bench_{secrets.token_hex(6)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _drop_database(server_url: str, url: str) -> None:
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def _start_workers(env: dict[str, str], processes: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        worker = subprocess.Popen(
            [sys.executable, "-m", "emeterai", "worker", "--processes", str(processes)],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while log.read_text(errors="replace").count(" ready") < processes:
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            raise RuntimeError(f"the workers did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    return worker


def _stop(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def run_bulk_bench(
    *,
    documents: int,
    worker_counts: list[int],
    server_url: str = DEFAULT_SERVER_URL,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    url = _scratch_database(server_url)
    try:
        with tempfile.TemporaryDirectory(prefix="emeterai-bench-bulk-") as temporary:
            return _run(Path(temporary), url, documents, worker_counts, progress)
    finally:
        _drop_database(server_url, url)


def _run(
    directory: Path,
    url: str,
    documents: int,
    worker_counts: list[int],
    progress: Callable[[str], None],
) -> dict[str, Any]:
    passphrase = secrets.token_urlsafe(24)
    data_dir = directory / "var"
    create_issuer_pki(data_dir / "pki", passphrase.encode())
    upgrade_database(url)
    settings = Settings(
        data_dir=data_dir,
        database_url=url,
        key_passphrase=passphrase,  # type: ignore[arg-type]
        public_url="https://emeterai.bench",
    )
    limits = JobSettings(documents_max=max(documents, 1), bytes_max=2 * 1024**3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMETERAI_")}
    env.update(
        EMETERAI_DATA_DIR=str(data_dir),
        EMETERAI_DATABASE_URL=url,
        EMETERAI_KEY_PASSPHRASE=passphrase,
        EMETERAI_PUBLIC_URL=settings.public_url,
        EMETERAI_JOBS_POLL_S="0.05",
        EMETERAI_JOBS_DOCUMENTS_MAX=str(limits.documents_max),
    )
    runtime = build_runtime(settings)
    letter = letter_a4()
    runs: list[dict[str, Any]] = []
    try:
        now = runtime.clock.now()
        with transaction(runtime.sessions) as session:
            account_id = create_account(session, "bench@example.id", now=now).id
            add_quota(
                session, account_id, documents * len(worker_counts), reference="bench", now=now
            )
        for processes in worker_counts:
            progress(f"starting {processes} worker process(es)")
            worker = _start_workers(env, processes, directory / f"worker-{processes}.log")
            try:
                progress(f"{processes} worker(s): stamping {documents} documents")
                started = time.perf_counter()
                submitted = submit_bulk(
                    runtime.sessions,
                    runtime.blobs,
                    BulkRequest(
                        account_id=account_id,
                        documents=[
                            BulkDocument(f"letter-{n}.pdf", letter, Position(1, 400.0, 60.0))
                            for n in range(documents)
                        ],
                    ),
                    limits=limits,
                    document_bytes_max=settings.upload_bytes_max,
                    clock=runtime.clock,
                )
                submitted_s = time.perf_counter() - started
                while True:
                    with transaction(runtime.sessions) as session:
                        state = job_progress(session, submitted.job_id, account_id=None)
                    if state.state in ("completed", "dead"):
                        break
                    if time.perf_counter() - started > RUN_TIMEOUT_S:
                        raise RuntimeError(f"the run with {processes} workers did not finish")
                    time.sleep(POLL_S)
                seconds = time.perf_counter() - started
            finally:
                _stop(worker)
            runs.append(
                {
                    "workers": processes,
                    "job_id": submitted.job_id,
                    "state": state.state,
                    "stamped": state.stamped,
                    # From the submission's commit to the last document: the workers' time.
                    "seconds": seconds - submitted_s,
                    "submit_seconds": submitted_s,
                    "submit_docs_per_s": documents / submitted_s,
                    "docs_per_s": state.stamped / (seconds - submitted_s),
                }
            )
        with transaction(runtime.sessions) as session:
            stamped_items = session.scalar(
                select(func.count()).select_from(JobItem).where(JobItem.state == "stamped")
            )
            with_stamp = session.scalar(
                select(func.count(func.distinct(JobItem.id)))
                .select_from(JobItem)
                .join(Stamp, Stamp.serial == JobItem.serial)
                .where(JobItem.state == "stamped")
            )
            stamps = session.scalar(select(func.count()).select_from(Stamp))
            audit_ok = run_audit(session).ok
    finally:
        runtime.close()
    expected = documents * len(worker_counts)
    base = runs[0]["docs_per_s"] if runs else 0.0
    for run in runs:
        run["scaling"] = run["docs_per_s"] / base if base else 0.0
    return {
        "documents": documents,
        "cpus": os.cpu_count(),
        "database": "postgresql",
        "runs": runs,
        "docs_per_s_by_workers": {str(run["workers"]): run["docs_per_s"] for run in runs},
        "scaling_vs_1_worker": {str(run["workers"]): run["scaling"] for run in runs},
        "stamped_exactly_once": stamped_items == with_stamp == stamps == expected,
        "audit_ok": audit_ok,
    }
