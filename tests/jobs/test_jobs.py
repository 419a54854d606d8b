"""Submit, work, report: quota reserved per document, charged only for what was stamped."""

from __future__ import annotations

import io
import zipfile

import pytest
from sqlalchemy import func, select

from emeterai.audit import run_audit
from emeterai.db import transaction
from emeterai.errors import BatchTooLarge, IdempotencyConflict, QuotaExhausted
from emeterai.jobs.intake import Position
from emeterai.jobs.models import Job, JobItem
from emeterai.jobs.service import write_results_zip
from emeterai.serials import Serial
from emeterai.stamping.models import Stamp
from emeterai.verify.service import verify_document
from tests.jobs.conftest import Bulk
from tests.support import corpus


def test_batch_reserves_on_submit_and_posts_each_document(bulk: Bulk, letter: bytes) -> None:
    submitted = bulk.submit([letter, corpus.letter_a4(pages=2), letter])
    assert bulk.balance().reserved == 3 and bulk.balance().available == 7
    progress = bulk.progress(submitted.job_id)
    assert (progress.state, progress.queued, progress.done) == ("queued", 3, 0)

    assert bulk.worker().run_until_idle() == 3

    progress = bulk.progress(submitted.job_id)
    assert (progress.state, progress.stamped, progress.failed) == ("completed", 3, 0)
    assert progress.finished_at is not None
    balance = bulk.balance()
    assert (balance.available, balance.reserved, balance.used) == (7, 0, 3)
    report = bulk.report(submitted.job_id)
    assert [line.state for line in report] == ["stamped"] * 3
    serials = [line.serial for line in report]
    assert len(set(serials)) == 3 and all(serials)
    buffer = io.BytesIO()
    assert write_results_zip(report, bulk.runtime.blobs, buffer) == 3
    with zipfile.ZipFile(buffer) as archive:
        names = archive.namelist()
        assert "report.csv" in names
        stamped = [name for name in names if name.startswith("stamped/")]
        assert len(stamped) == 3
        document = archive.read(stamped[0])
    assert bulk.runtime.blobs.get(report[0].blob_key or "") == document
    with transaction(bulk.runtime.sessions) as session:
        verdict = verify_document(
            session,
            document,
            trust_roots_pem=bulk.runtime.trust_roots(),
            bytes_max=bulk.runtime.settings.upload_bytes_max,
        )
    assert (verdict.verdict.value, verdict.serial) == ("GENUINE", report[0].serial)
    assert bulk.audit_ok()


def test_refused_documents_are_voided_and_not_charged(bulk: Bulk, letter: bytes) -> None:
    stamped_before = bulk.submit([letter])
    bulk.worker().run_until_idle()
    (first,) = bulk.report(stamped_before.job_id)
    already = bulk.runtime.blobs.get(first.blob_key or "")
    assert already is not None

    submitted = bulk.submit(
        [("ok.pdf", letter), ("notes.txt", b"not a pdf at all"), ("again.pdf", already)],
        position=Position(page=1, x_pt=400.0, y_pt=60.0),
    )
    bulk.worker().run_until_idle()

    report = {line.name: line for line in bulk.report(submitted.job_id)}
    assert report["ok.pdf"].state == "stamped"
    assert (report["notes.txt"].state, report["notes.txt"].error_code) == ("failed", "NOT_A_PDF")
    assert (report["again.pdf"].state, report["again.pdf"].error_code) == (
        "failed",
        "ALREADY_STAMPED",
    )
    progress = bulk.progress(submitted.job_id)
    assert (progress.state, progress.stamped, progress.failed) == ("completed", 1, 2)
    balance = bulk.balance()
    assert (balance.available, balance.reserved, balance.used) == (8, 0, 2)
    assert bulk.audit_ok()


def test_a_batch_beyond_the_quota_is_refused_whole(bulk: Bulk, letter: bytes) -> None:
    with pytest.raises(QuotaExhausted):
        bulk.submit([letter] * 11)
    with transaction(bulk.runtime.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(Serial)) == 0
    assert bulk.balance().available == 10


def test_batch_bounds(bulk: Bulk, letter: bytes) -> None:
    with pytest.raises(BatchTooLarge):
        bulk.submit([letter] * 21)
    with pytest.raises(BatchTooLarge):
        bulk.submit([b"%PDF-" + b"0" * 1_000_000] * 2 + [letter])


def test_submission_is_idempotent_on_its_key(bulk: Bulk, letter: bytes) -> None:
    first = bulk.submit([letter, letter], key="invoices-2024-09")
    again = bulk.submit([letter, letter], key="invoices-2024-09")
    assert (again.job_id, again.replayed) == (first.job_id, True)
    assert bulk.balance().reserved == 2
    with pytest.raises(IdempotencyConflict):
        bulk.submit([letter], key="invoices-2024-09")


def test_each_document_is_stamped_once_per_item(bulk: Bulk, letter: bytes) -> None:
    submitted = bulk.submit([letter] * 4)
    bulk.worker().run_until_idle()
    with transaction(bulk.runtime.sessions) as session:
        rows = session.execute(
            select(JobItem.serial, Stamp.serial)
            .join(Stamp, Stamp.serial == JobItem.serial)
            .where(JobItem.job_id == submitted.job_id)
        ).all()
    assert len(rows) == 4 and len({row[0] for row in rows}) == 4


def test_audit_finds_a_job_whose_counts_disagree_with_its_documents(
    bulk: Bulk, letter: bytes
) -> None:
    submitted = bulk.submit([letter, letter])
    bulk.worker().run_until_idle()
    with transaction(bulk.runtime.sessions) as session:
        job = session.get(Job, submitted.job_id)
        assert job is not None
        job.stamped_count, job.failed_count = 1, 1
    with transaction(bulk.runtime.sessions) as session:
        report = run_audit(session)
    assert {finding.invariant for finding in report.findings} == {"bulk-job-counts-match-documents"}
