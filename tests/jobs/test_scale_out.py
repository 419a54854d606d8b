"""Scale-out: two API processes and two worker processes against one PostgreSQL.

A mixed load (single stamps through both API processes, and bulk batches submitted
through both) while one worker is killed with SIGKILL holding a document. Every document
must be stamped exactly once, and `emeterai audit` must pass.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.api.conftest import Server, start_server
from tests.support import corpus

WORKER_ENV = {
    "EMETERAI_JOBS_POLL_S": "0.1",
    "EMETERAI_JOBS_LEASE_S": "3",
    "EMETERAI_JOBS_HEARTBEAT_S": "0.5",
    "EMETERAI_JOBS_BACKOFF_BASE_S": "0.5",
}
DEADLINE_S = 90


@pytest.fixture
def servers(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Server, Server]]:
    data_dir = tmp_path / "var"  # shared: the blob store and the keys, as on a shared volume
    first = start_server(data_dir, postgres_url)
    second = start_server(data_dir, postgres_url)
    try:
        yield next(first), next(second)
    finally:
        first.close()
        second.close()


def _start_worker(server: Server, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "emeterai", "worker"],
            env={**server.env, **WORKER_ENV},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def _wait_ready(process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while " ready" not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def _query(url: str, sql: str, **params: object) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql), params).all()]
    finally:
        engine.dispose()


def test_two_api_and_two_worker_processes_stamp_everything_exactly_once(
    servers: tuple[Server, Server], postgres_url: str, tmp_path: Path
) -> None:
    api_a, api_b = servers
    token_a = api_a.user("instansi@example.id", 40)
    token_b = api_b.user("perusahaan@example.id", 40)
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    workers = [_start_worker(api_a, logs[0]), _start_worker(api_b, logs[1])]
    try:
        for worker, log in zip(workers, logs, strict=True):
            _wait_ready(worker, log)
        letter, two_pages = corpus.letter_a4(), corpus.letter_a4(pages=2)
        batch = io.BytesIO()
        with zipfile.ZipFile(batch, "w") as archive:
            for n in range(12):
                archive.writestr(f"surat/{n:02d}.pdf", letter if n % 2 else two_pages)
        first = httpx.post(
            f"{api_a.base_url}/api/v1/jobs",
            headers={"Authorization": f"Bearer {token_a}", "Idempotency-Key": "batch-a"},
            files={"files": ("batch.zip", batch.getvalue(), "application/zip")},
            data={"page": "1"},
            timeout=60,
        )
        assert first.status_code == 202, first.text
        second = httpx.post(
            f"{api_b.base_url}/api/v1/jobs",
            headers={"Authorization": f"Bearer {token_b}"},
            files=[("files", (f"inv-{n}.pdf", letter, "application/pdf")) for n in range(8)],
            data={"positions": json.dumps([{"page": 1, "x": 300, "y": 80}] * 8)},
            timeout=60,
        )
        assert second.status_code == 202, second.text
        jobs = {first.json()["id"]: token_a, second.json()["id"]: token_b}

        def single(n: int) -> str:
            server, token = (api_a, token_a) if n % 2 else (api_b, token_b)
            response = httpx.post(
                f"{server.base_url}/api/v1/stamps",
                headers={"Authorization": f"Bearer {token}"},
                files={"file": ("single.pdf", letter, "application/pdf")},
                timeout=120,
            )
            assert response.status_code == 200, response.text
            return response.headers["X-Emeterai-Serial"]

        with ThreadPoolExecutor(4) as pool:
            singles = pool.map(single, range(8))

            # SIGKILL the first worker while it holds a document of a batch.
            pid = workers[0].pid
            deadline = time.monotonic() + DEADLINE_S
            held: list[tuple[object, ...]] = []
            while not held:
                held = _query(
                    postgres_url,
                    "SELECT id FROM job_items WHERE state = 'running' AND locked_by LIKE :me",
                    me=f"%:{pid}:%",
                )
                assert time.monotonic() < deadline, "worker 1 never took a document"
                assert workers[0].poll() is None
                time.sleep(0.02)
            os.kill(pid, signal.SIGKILL)
            assert workers[0].wait(timeout=10) == -signal.SIGKILL
            # The worker may have finished the document between the look and the kill.
            ((state_at_kill,),) = _query(
                postgres_url, "SELECT state FROM job_items WHERE id = :id", id=held[0][0]
            )
            single_serials = list(singles)

        for job_id, token in jobs.items():
            server = api_b if token == token_a else api_a  # any API process serves any job
            while True:
                progress = httpx.get(
                    f"{server.base_url}/api/v1/jobs/{job_id}",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                ).json()
                if progress["state"] in ("completed", "dead"):
                    break
                assert time.monotonic() < deadline, progress
                time.sleep(0.2)
            assert (progress["state"], progress["stamped"]) == ("completed", progress["item_count"])
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(timeout=60) == 0

    report = httpx.get(
        f"{api_a.base_url}/api/v1/jobs/{first.json()['id']}/report",
        headers={"Authorization": f"Bearer {token_a}"},
        timeout=30,
    ).json()
    bulk_serials = [line["serial"] for line in report["documents"]]
    results = httpx.get(
        f"{api_b.base_url}/api/v1/jobs/{second.json()['id']}/results.zip",
        headers={"Authorization": f"Bearer {token_b}"},
        timeout=60,
    )
    with zipfile.ZipFile(io.BytesIO(results.content)) as archive:
        second_serials = [
            name.rsplit("-", 1)[1].removesuffix(".pdf")
            for name in archive.namelist()
            if name.startswith("stamped/")
        ]
    everything = bulk_serials + second_serials + single_serials
    assert len(everything) == 12 + 8 + 8 == len(set(everything))

    # Exactly once, from the rows: one stamp per stamped document, nothing else.
    # The document the killed worker held was finished by the other one, on a later attempt.
    ((state, attempts, stamps),) = _query(
        postgres_url,
        "SELECT i.state, i.attempts, count(s.id) FROM job_items i"
        " LEFT JOIN stamps s ON s.serial = i.serial WHERE i.id = :id GROUP BY i.id",
        id=held[0][0],
    )
    assert (state, stamps) == ("stamped", 1)
    if state_at_kill == "running":  # killed while holding it: another attempt finished it
        assert int(str(attempts)) >= 2
    assert (
        _query(
            postgres_url,
            "SELECT i.id FROM job_items i LEFT JOIN stamps s ON s.serial = i.serial"
            " WHERE s.id IS NULL OR i.state <> 'stamped'",
        )
        == []
    )
    assert _query(postgres_url, "SELECT count(*) FROM stamps") == [(28,)]
    for email, count in (("instansi@example.id", 12 + 4), ("perusahaan@example.id", 8 + 4)):
        quota = json.loads(api_a.cli("quota", "show", email, "--json").stdout)
        assert (quota["used"], quota["reserved"], quota["available"]) == (count, 0, 40 - count)
    audit = api_a.cli("audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
