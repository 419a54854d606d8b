"""Bulk stamping in the browser: upload two PDFs, watch the job reach done while a real
`emeterai worker` stamps them, read the report and download the results ZIP."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from emeterai.pdf.samples import letter_a4
from tests.api.conftest import Server
from tests.pdf.conftest import make_pdf
from tests.web.conftest import looked_at
from tests.web.test_browser import grant, register

WORKER_ENV = {
    "EMETERAI_JOBS_POLL_S": "0.2",
    "EMETERAI_JOBS_LEASE_S": "10",
    "EMETERAI_JOBS_HEARTBEAT_S": "1",
}
SERIAL = re.compile(r"^[0-9A-Z]{22}$")


@pytest.fixture(scope="module")
def worker(web_server: Server) -> Iterator[subprocess.Popen[bytes]]:
    """`emeterai worker` against the server's data directory and database."""
    log = web_server.data_dir / "worker.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "emeterai", "worker"],
            env={**web_server.env, **WORKER_ENV},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while " ready" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_bulk_stamping_watch_progress_report_and_download(
    page: Page, web_server: Server, worker: subprocess.Popen[bytes], axe: str, tmp_path: Path
) -> None:
    email = register(page)
    grant(web_server, email, 2)
    page.get_by_role("link", name="Bubuhkan banyak PDF").first.click()
    expect(page.get_by_role("heading", name="Bubuhkan banyak PDF")).to_be_visible()
    looked_at(page, "bulk", axe)
    page.get_by_label("Dokumen PDF atau ZIP").set_input_files(
        [
            {"name": "surat.pdf", "mimeType": "application/pdf", "buffer": letter_a4()},
            {
                "name": "kuitansi.pdf",
                "mimeType": "application/pdf",
                "buffer": make_pdf(media_box=(0, 0, 420, 595)),
            },
        ]
    )
    page.get_by_label("Kiri bawah").check()
    page.get_by_role("button", name="Mulai membubuhkan").click()
    expect(page.get_by_role("heading", name=re.compile(r"Pekerjaan massal #\d+"))).to_be_visible()
    # No reload: the page asks again at the pace the server gives and shows the end.
    expect(page.locator("#job-state")).to_have_text("Selesai", timeout=30_000)
    expect(page.locator("#count-stamped")).to_have_text("2")
    expect(page.locator("#count-failed")).to_have_text("0")
    expect(page.locator("#count-pending")).to_have_text("0")
    assert page.locator("#job-progress").get_attribute("value") == "100"
    serials = page.locator("#report-rows a.serial").all_inner_texts()
    assert len(serials) == 2 and all(SERIAL.match(s) for s in serials), serials
    expect(page.locator("#report-rows td.name")).to_have_text(["1. surat.pdf", "2. kuitansi.pdf"])
    looked_at(page, "bulk-job-done", axe)
    with page.expect_download() as info:
        page.get_by_role("link", name="Unduh hasilnya (ZIP)").click()
    target = tmp_path / "results.zip"
    info.value.save_as(target)
    with zipfile.ZipFile(io.BytesIO(target.read_bytes())) as archive:
        pdfs = [name for name in archive.namelist() if name.endswith(".pdf")]
        assert len(pdfs) == 2, archive.namelist()
        assert all(archive.read(name).startswith(b"%PDF") for name in pdfs)
        assert sorted(s for s in serials) == sorted(n[-26:-4] for n in pdfs)
    # The dashboard lists the job; another account cannot see it.
    page.goto("/dashboard")
    looked_at(page, "dashboard-bulk", axe)
    job_link = page.locator("#bulk-jobs a").first
    job_path = job_link.get_attribute("href")
    assert job_path and job_path.startswith("/bulk/")
    page.context.clear_cookies()
    register(page)
    assert page.goto(job_path) is not None
    expect(page.get_by_text("Tidak ada pekerjaan massal itu di akun Anda.")).to_be_visible()
    answer = page.request.get(job_path + "/results.zip")
    assert answer.status == 404
