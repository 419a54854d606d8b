"""Crashes, stalls, retries and dead letters: never stamped twice, never charged twice."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from emeterai.db import transaction
from emeterai.jobs.models import JobItem
from emeterai.jobs.service import retry_job
from emeterai.jobs.worker import claim_next
from emeterai.serials import Serial
from emeterai.stamping.models import Stamp
from emeterai.stamping.signing import SignJob
from tests.conftest import FixedClock
from tests.jobs.conftest import LIMITS, Bulk


class BrokenSigner:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, job: SignJob) -> bytes:
        self.calls += 1
        raise RuntimeError("the HSM is unreachable")


def _stamps(bulk: Bulk) -> int:
    with transaction(bulk.runtime.sessions) as session:
        return int(session.scalar(select(func.count()).select_from(Stamp)) or 0)


def test_a_stalled_document_is_finished_once_by_another_worker(
    bulk: Bulk, letter: bytes, clock: FixedClock
) -> None:
    submitted = bulk.submit([letter])
    first, second = bulk.worker(), bulk.worker()
    with transaction(bulk.runtime.sessions) as session:
        claim = claim_next(session, worker_id=first.worker_id, now=clock.now(), limits=LIMITS)
    assert claim is not None
    # The first worker stalls (or died) holding the lease: nobody else may take it...
    assert second.run_once() is False
    clock.advance(LIMITS.lease_s / 2)
    assert first.heartbeat() == 1  # ...and its heartbeat keeps the lease alive.
    clock.advance(LIMITS.lease_s / 2 + 1)
    assert second.run_once() is False
    clock.advance(LIMITS.lease_s)
    # Its lease ran out: the second worker finishes the very same reservation.
    assert second.run_once() is True
    (line,) = bulk.report(submitted.job_id)
    assert (line.state, line.serial, line.attempts) == ("stamped", claim.serial, 2)
    # The first worker wakes up, signs and tries to record: the lease is gone, nothing counts.
    assert first.process(claim) == "lost"
    assert _stamps(bulk) == 1
    balance = bulk.balance()
    assert (balance.used, balance.reserved, balance.available) == (1, 0, 9)
    assert bulk.audit_ok()


def test_retries_back_off_then_dead_letter_then_operator_retry(
    bulk: Bulk, letter: bytes, clock: FixedClock
) -> None:
    submitted = bulk.submit([letter, letter])
    broken = BrokenSigner()
    worker = bulk.worker(broken)
    assert worker.run_until_idle() == 2
    assert worker.run_once() is False  # both wait for their backoff
    assert bulk.balance().reserved == 2  # a retryable error keeps the reservation
    (line, _) = bulk.report(submitted.job_id)
    assert (line.state, line.attempts) == ("queued", 1)
    assert line.detail is not None and line.detail.startswith("SIGNING_FAILED")
    for _ in range(LIMITS.attempts_max - 1):
        clock.advance(LIMITS.backoff_max_s + 1)
        assert worker.run_until_idle() == 2
    assert broken.calls == 2 * LIMITS.attempts_max
    progress = bulk.progress(submitted.job_id)
    assert (progress.state, progress.dead) == ("dead", 2)
    balance = bulk.balance()
    assert (balance.reserved, balance.available, balance.used) == (0, 10, 0)
    old_serials = {line.serial for line in bulk.report(submitted.job_id)}
    assert {line.error_code for line in bulk.report(submitted.job_id)} == {"SIGNING_FAILED"}

    with transaction(bulk.runtime.sessions) as session:
        assert retry_job(session, submitted.job_id, now=clock.now()) == 2
    assert bulk.worker().run_until_idle() == 2
    report = bulk.report(submitted.job_id)
    assert [line.state for line in report] == ["stamped", "stamped"]
    assert not old_serials & {line.serial for line in report}
    assert bulk.progress(submitted.job_id).state == "completed"
    balance = bulk.balance()
    assert (balance.reserved, balance.available, balance.used) == (0, 8, 2)
    assert bulk.audit_ok()


def test_a_document_that_keeps_killing_its_worker_is_dead_lettered(
    bulk: Bulk, letter: bytes, clock: FixedClock
) -> None:
    submitted = bulk.submit([letter])
    for attempt in range(LIMITS.attempts_max):
        with transaction(bulk.runtime.sessions) as session:
            claim = claim_next(
                session, worker_id=f"doomed-{attempt}", now=clock.now(), limits=LIMITS
            )
        assert claim is not None
        clock.advance(LIMITS.lease_s + 1)
    assert bulk.worker().run_once() is False
    (line,) = bulk.report(submitted.job_id)
    assert (line.state, line.error_code) == ("dead", "WORKER_LOST")
    assert bulk.balance().available == 10
    assert bulk.audit_ok()


def test_an_expired_reservation_is_renewed_before_signing(
    bulk: Bulk, letter: bytes, clock: FixedClock
) -> None:
    submitted = bulk.submit([letter])
    with transaction(bulk.runtime.sessions) as session:
        (old_serial,) = session.scalars(select(JobItem.serial)).all()
    clock.advance(LIMITS.reservation_ttl_s + 1)
    worker = bulk.worker()
    worker.sweep()  # the ledger sweep expires it: the quota is back
    assert bulk.balance().reserved == 0
    assert worker.run_until_idle() == 1
    (line,) = bulk.report(submitted.job_id)
    assert line.state == "stamped" and line.serial != old_serial
    with transaction(bulk.runtime.sessions) as session:
        assert session.get(Serial, old_serial).state == "voided"  # type: ignore[union-attr]
    assert bulk.balance().used == 1
    assert bulk.audit_ok()


def test_concurrent_claims_never_share_a_document(
    bulk: Bulk, letter: bytes, clock: FixedClock
) -> None:
    bulk.submit([letter] * 10)
    claimed: list[int] = []
    errors: list[BaseException] = []

    def claim_all(name: str) -> None:
        try:
            while True:
                with transaction(bulk.runtime.sessions) as session:
                    claim = claim_next(session, worker_id=name, now=clock.now(), limits=LIMITS)
                if claim is None:
                    return
                claimed.append(claim.item_id)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=claim_all, args=(f"w{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 10
