"""Bulk jobs through the real use cases and a real worker, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from emeterai.accounts import create_account
from emeterai.audit import run_audit
from emeterai.db import transaction
from emeterai.jobs.config import JobSettings
from emeterai.jobs.intake import BulkDocument, Position
from emeterai.jobs.service import (
    BulkRequest,
    JobProgress,
    ReportLine,
    SubmittedJob,
    job_progress,
    job_report,
    submit_bulk,
)
from emeterai.jobs.worker import Worker
from emeterai.quota import QuotaBalance, add_quota, quota_balance
from emeterai.runtime import Runtime
from emeterai.stamping.signing import InProcessSigner, Signer
from tests.stamping.conftest import in_process_signer, issuer_material  # noqa: F401
from tests.support import corpus

LIMITS = JobSettings(
    documents_max=20,
    bytes_max=2_000_000,
    attempts_max=3,
    backoff_base_s=10.0,
    backoff_max_s=60.0,
    lease_s=30.0,
    heartbeat_s=5.0,
    reservation_ttl_s=3600,
)


@dataclass
class Bulk:
    runtime: Runtime
    signer: Signer
    account_id: int
    limits: JobSettings = LIMITS
    workers: list[Worker] = field(default_factory=list)

    def submit(
        self,
        documents: Sequence[bytes | tuple[str, bytes]],
        *,
        position: Position = Position(),
        webhook_url: str | None = None,
        key: str | None = None,
    ) -> SubmittedJob:
        batch = [
            BulkDocument(name=f"doc-{index}.pdf", data=item, position=position)
            if isinstance(item, bytes)
            else BulkDocument(name=item[0], data=item[1], position=position)
            for index, item in enumerate(documents, start=1)
        ]
        return submit_bulk(
            self.runtime.sessions,
            self.runtime.blobs,
            BulkRequest(
                account_id=self.account_id,
                documents=batch,
                webhook_url=webhook_url,
                idempotency_key=key,
            ),
            limits=self.limits,
            document_bytes_max=self.runtime.settings.upload_bytes_max,
            clock=self.runtime.clock,
        )

    def worker(self, signer: Signer | None = None, limits: JobSettings | None = None) -> Worker:
        worker = Worker(self.runtime, signer or self.signer, limits or self.limits)
        self.workers.append(worker)
        return worker

    def progress(self, job_id: int) -> JobProgress:
        with transaction(self.runtime.sessions) as session:
            return job_progress(session, job_id, account_id=self.account_id)

    def report(self, job_id: int) -> list[ReportLine]:
        with transaction(self.runtime.sessions) as session:
            return job_report(session, job_id, account_id=self.account_id)

    def balance(self) -> QuotaBalance:
        with transaction(self.runtime.sessions) as session:
            return quota_balance(session, self.account_id, now=self.runtime.clock.now())

    def audit_ok(self) -> bool:
        with transaction(self.runtime.sessions) as session:
            report = run_audit(session)
        assert report.ok, report.findings
        return report.ok


@pytest.fixture
def bulk(runtime: Runtime, in_process_signer: InProcessSigner) -> Bulk:  # noqa: F811
    now = runtime.clock.now()
    with transaction(runtime.sessions) as session:
        account_id = create_account(session, "instansi@example.id", now=now).id
        add_quota(session, account_id, 10, reference="grant-bulk", now=now)
    return Bulk(runtime=runtime, signer=in_process_signer, account_id=account_id)


@pytest.fixture(scope="session")
def letter() -> bytes:
    return corpus.letter_a4()
