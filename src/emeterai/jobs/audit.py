"""Audit checks of bulk jobs (registered in emeterai.audit.CHECKS)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emeterai.jobs.models import Job, JobItem
from emeterai.serials import Serial
from emeterai.stamping.models import Stamp

SAMPLE_MAX = 5


def documents_stamped_exactly_once(session: Session) -> list[str]:
    """A stamped document has one stamp record on its serial; any other has none."""
    rows = session.execute(
        select(JobItem.job_id, JobItem.position, JobItem.state, Serial.state, Stamp.id)
        .outerjoin(Serial, Serial.serial == JobItem.serial)
        .outerjoin(Stamp, Stamp.serial == JobItem.serial)
        .where(
            (
                (JobItem.state == "stamped")
                & (Stamp.id.is_(None) | Serial.state.not_in(("used", "revoked")))
            )
            | ((JobItem.state != "stamped") & Stamp.id.is_not(None))
        )
        .limit(SAMPLE_MAX)
    ).all()
    return [
        f"job {job_id} document {position} is {state} but its serial is {serial_state}"
        f" with {'a' if stamp_id else 'no'} stamp record"
        for job_id, position, state, serial_state, stamp_id in rows
    ]


def job_counts_match_documents(session: Session) -> list[str]:
    counted = {
        (job_id, state): int(count)
        for job_id, state, count in session.execute(
            select(JobItem.job_id, JobItem.state, func.count()).group_by(
                JobItem.job_id, JobItem.state
            )
        ).all()
    }
    problems = []
    for job in session.scalars(select(Job)).yield_per(1000):
        actual = (job.stamped_count, job.failed_count, job.dead_count)
        want = tuple(counted.get((job.id, state), 0) for state in ("stamped", "failed", "dead"))
        if actual != want:
            problems.append(f"job {job.id} counts {actual} but its documents say {want}")
            if len(problems) >= SAMPLE_MAX:
                break
    return problems
