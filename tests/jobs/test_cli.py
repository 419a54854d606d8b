"""The operator's view: `emeterai jobs ...` and `emeterai worker` as real processes."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.cli.test_cli import Cli, cli  # noqa: F401
from tests.support import corpus

WORKER_ENV = {
    "EMETERAI_JOBS_POLL_S": "0.1",
    "EMETERAI_JOBS_LEASE_S": "10",
    "EMETERAI_JOBS_HEARTBEAT_S": "1",
}


def _worker(cli: Cli, log: Path) -> subprocess.Popen[bytes]:  # noqa: F811
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "emeterai", "worker"],
            env={**cli.env, **WORKER_ENV},
            cwd=cli.cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while " ready" not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return process


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def test_bulk_from_the_command_line(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    cli.ok("account", "create", "kantor@example.id")
    cli.ok("quota", "add", "kantor@example.id", "8", "--reference", "grant-1")
    letter = tmp_path / "surat.pdf"
    letter.write_bytes(corpus.letter_a4())
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("invoices/a.pdf", corpus.letter_a4(pages=2))
        handle.writestr("invoices/b.pdf", corpus.letter_size())
        handle.writestr("invoices/readme.txt", "not a pdf")
        handle.writestr("__MACOSX/._a.pdf", "junk")
    positions = tmp_path / "positions.json"
    positions.write_text(json.dumps({"a.pdf": {"page": 2, "x": 300, "y": 100}}))

    submitted = json.loads(
        cli.ok(
            "jobs",
            "submit",
            str(letter),
            str(archive),
            "--account",
            "kantor@example.id",
            "--positions",
            str(positions),
            "--json",
        )
    )
    job_id = str(submitted["id"])
    assert submitted["item_count"] == 4
    assert cli.quota("kantor@example.id")["reserved"] == 4

    worker = _worker(cli, tmp_path / "worker.log")
    try:
        watched = cli("jobs", "show", job_id, "--watch")
        assert watched.returncode == 0, watched.stderr
        assert "4/4" in watched.stdout
    finally:
        assert _stop(worker) == 0
    assert "stopped" in (tmp_path / "worker.log").read_text()

    shown = json.loads(cli.ok("jobs", "show", job_id, "--report", "--json"))
    assert (shown["state"], shown["stamped"], shown["failed"]) == ("completed", 3, 1)
    by_name = {line["name"]: line for line in shown["documents"]}
    assert by_name["readme.txt"]["error_code"] == "NOT_A_PDF"
    assert all(by_name[name]["serial"] for name in ("surat.pdf", "a.pdf", "b.pdf"))
    quota = cli.quota("kantor@example.id")
    assert (quota["available"], quota["reserved"], quota["used"]) == (5, 0, 3)

    results = tmp_path / "results.zip"
    cli.ok("jobs", "results", job_id, "-o", str(results))
    with zipfile.ZipFile(io.BytesIO(results.read_bytes())) as handle:
        stamped = [name for name in handle.namelist() if name.startswith("stamped/")]
        assert len(stamped) == 3
        assert "NOT_A_PDF" in handle.read("report.csv").decode()
    assert json.loads(cli.ok("jobs", "list", "--state", "completed", "--json"))[0]["id"] == int(
        job_id
    )

    refused = cli("jobs", "retry", job_id)
    assert refused.returncode == 3 and "JOB_NOT_RETRYABLE" in refused.stderr
    cli.ok("audit")


def _counts(database_url: str, job_id: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT state, count(*) FROM job_items WHERE job_id = :id GROUP BY state"),
                {"id": int(job_id)},
            ).all()
    finally:
        engine.dispose()
    return {str(state): int(count) for state, count in rows}


def test_a_signal_stops_the_worker_after_the_document_in_hand(
    cli: Cli,  # noqa: F811
    tmp_path: Path,
    database_url: str,
) -> None:
    cli.ok("account", "create", "kantor@example.id")
    cli.ok("quota", "add", "kantor@example.id", "12", "--reference", "grant-1")
    letter = tmp_path / "surat.pdf"
    letter.write_bytes(corpus.letter_a4())
    job_id = cli.ok("jobs", "submit", *[str(letter)] * 12, "--account", "kantor@example.id").strip()
    worker = _worker(cli, tmp_path / "worker.log")
    deadline = time.monotonic() + 60
    while _counts(database_url, job_id).get("stamped", 0) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert _stop(worker) == 0
    counts = _counts(database_url, job_id)
    # Nothing is left half-done: the document in hand was finished, none is lost.
    assert "running" not in counts
    assert counts.get("stamped", 0) + counts.get("queued", 0) == 12
    assert cli.quota("kantor@example.id")["used"] == counts["stamped"]
    cli.ok("audit")
