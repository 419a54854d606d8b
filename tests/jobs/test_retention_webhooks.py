"""Retention keeps the ledger and hashes but not the bytes; the webhook is HMAC-signed."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from emeterai.db import transaction
from emeterai.errors import StampRetentionOver
from emeterai.jobs.retention import purge_retention
from emeterai.jobs.service import write_results_zip
from emeterai.jobs.webhooks import SIGNATURE_HEADER, verify_signature
from emeterai.stamping.service import stamped_document_of
from tests.conftest import FixedClock
from tests.jobs.conftest import Bulk


def test_retention_deletes_the_bytes_and_keeps_the_record(
    bulk: Bulk, letter: bytes, clock: FixedClock
) -> None:
    submitted = bulk.submit([letter])
    bulk.worker().run_until_idle()
    (line,) = bulk.report(submitted.job_id)
    serial = line.serial or ""
    settings, blobs = bulk.runtime.settings, bulk.runtime.blobs
    kept = purge_retention(bulk.runtime.sessions, blobs, settings=settings, clock=clock)
    assert (kept.stamps, kept.jobs, kept.blobs_deleted) == (0, 0, 0)

    clock.advance(settings.stamp_retention_days * 86_400 + 1)
    purged = purge_retention(bulk.runtime.sessions, blobs, settings=settings, clock=clock)
    assert (purged.stamps, purged.jobs, purged.blobs_deleted) == (1, 1, 2)
    assert blobs.get(line.blob_key or "") is None
    with transaction(bulk.runtime.sessions) as session, pytest.raises(StampRetentionOver):
        stamped_document_of(session, blobs, bulk.account_id, serial)
    (after,) = bulk.report(submitted.job_id)
    assert (after.serial, after.document_sha256) == (serial, line.document_sha256)
    buffer = io.BytesIO()
    assert write_results_zip([after], blobs, buffer) == 0
    with zipfile.ZipFile(buffer) as archive:
        assert "STAMP_RETENTION_OVER" in archive.read("report.csv").decode()
    assert bulk.progress(submitted.job_id).purged
    assert bulk.balance().used == 1
    assert bulk.audit_ok()


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    answers: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(type(self).answers.pop(0) if type(self).answers else 204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.received, Receiver.answers = [], [500]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/emeterai"
    finally:
        server.shutdown()
        server.server_close()


def test_completion_webhook_is_signed_and_retried(
    bulk: Bulk, letter: bytes, clock: FixedClock, receiver: str
) -> None:
    submitted = bulk.submit([letter, b"no pdf"], webhook_url=receiver)
    assert submitted.webhook_secret is not None
    worker = bulk.worker()
    worker.run_until_idle()
    worker.sweep()  # the receiver answers 500 the first time: retried later
    assert len(Receiver.received) == 1
    assert bulk.progress(submitted.job_id).webhook_state == "pending"
    worker.sweep()
    assert len(Receiver.received) == 1  # not before its backoff
    clock.advance(60)
    worker.sweep()
    assert len(Receiver.received) == 2
    assert bulk.progress(submitted.job_id).webhook_state == "delivered"

    headers, body = Receiver.received[-1]
    event = json.loads(body)
    assert (event["job_id"], event["state"], event["stamped"], event["failed"]) == (
        submitted.job_id,
        "completed",
        1,
        1,
    )
    signature = headers[SIGNATURE_HEADER]
    secret = submitted.webhook_secret
    now = int(clock.now().timestamp())
    assert verify_signature(secret, signature, body, now_unix=now)
    assert not verify_signature(secret, signature, body + b" ", now_unix=now)
    assert not verify_signature("whsec_other", signature, body, now_unix=now)
    assert not verify_signature(secret, signature, body, now_unix=now + 3600)
