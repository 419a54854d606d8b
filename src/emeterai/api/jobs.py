"""Bulk jobs over HTTP: submit a batch (several PDFs or a ZIP), watch it, get its results."""

from __future__ import annotations

import io
import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from emeterai.api.routes import UPLOAD_CHUNK_BYTES, AccountId, runtime_of
from emeterai.db import transaction
from emeterai.errors import BatchTooLarge, InvalidPositions
from emeterai.jobs.config import JobSettings

router = APIRouter(prefix="/api/v1/jobs", tags=["bulk jobs"])
PAGE_SIZE_MAX = 100
JOBS_PREFIX = "/api/v1/jobs"


def job_limits(request: Request) -> JobSettings:
    """Read once per process from EMETERAI_JOBS_*, like the core settings."""
    limits: JobSettings | None = getattr(request.app.state, "job_limits", None)
    if limits is None:
        limits = JobSettings()
        request.app.state.job_limits = limits
    return limits


class JobOut(BaseModel):
    id: int
    state: str
    item_count: int
    queued: int
    running: int
    stamped: int
    failed: int
    dead: int
    done: int
    created_at: str
    finished_at: str | None
    webhook_state: str | None
    documents_purged: bool


class SubmittedOut(BaseModel):
    id: int
    item_count: int
    replayed: bool
    # Shown once: verifies the completion webhook's X-Emeterai-Signature.
    webhook_secret: str | None
    progress_url: str
    report_url: str
    results_url: str


class ReportLineOut(BaseModel):
    position: int
    name: str
    state: str
    serial: str | None
    error_code: str | None
    detail: str | None
    attempts: int
    document_sha256: str | None


class ReportOut(BaseModel):
    id: int
    state: str
    documents: list[ReportLineOut]


class JobPage(BaseModel):
    items: list[JobOut]
    next_before_id: int | None


async def read_batch(
    files: list[UploadFile], bytes_max: int, *, skip_empty: bool = False
) -> list[tuple[str, bytes]]:
    """Every file with its name, the batch bounded as it streams in. A web form sends an
    empty part for an unused file input: `skip_empty` drops those."""
    read: list[tuple[str, bytes]] = []
    total = 0
    for upload in files:
        chunks: list[bytes] = []
        while chunk := await upload.read(UPLOAD_CHUNK_BYTES):
            total += len(chunk)
            if total > bytes_max:
                raise BatchTooLarge(f"the batch holds more than {bytes_max} bytes, the limit")
            chunks.append(chunk)
        if skip_empty and not chunks:
            continue
        read.append((upload.filename or f"document-{len(read) + 1}.pdf", b"".join(chunks)))
    return read


@router.post("", status_code=202, response_model=SubmittedOut)
async def submit_job(
    request: Request,
    account_id: AccountId,
    files: Annotated[list[UploadFile], File(description="PDFs, or one or more ZIPs of PDFs.")],
    page: Annotated[int, Form(ge=1, le=100_000, description="Shared page.")] = 1,
    x: Annotated[float | None, Form(description="Shared x, points from the left.")] = None,
    y: Annotated[float | None, Form(description="Shared y, points from the bottom.")] = None,
    positions: Annotated[
        str | None,
        Form(
            description='Per document: a JSON list in order, or {"name.pdf": {"page", "x", "y"}}.'
        ),
    ] = None,
    webhook_url: Annotated[
        str | None, Form(description="POSTed, HMAC-signed, when the job ends.")
    ] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    """Queue a batch. The quota of every document is reserved now; each document is
    charged when it is stamped, and a refused one is released."""
    from emeterai.jobs.intake import Bounds, bulk_documents
    from emeterai.jobs.service import BulkRequest, shared_position, submit_bulk

    runtime = runtime_of(request)
    limits = job_limits(request)
    for value in (x, y):
        if value is not None and not math.isfinite(value):
            raise InvalidPositions("a coordinate must be a finite number of points")
    uploaded = await read_batch(files, limits.bytes_max)

    def work() -> Any:
        documents = bulk_documents(
            uploaded,
            bounds=Bounds(
                limits.documents_max, limits.bytes_max, runtime.settings.upload_bytes_max
            ),
            shared=shared_position(page, x, y),
            positions_json=positions,
        )
        return submit_bulk(
            runtime.sessions,
            runtime.blobs,
            BulkRequest(
                account_id=account_id,
                documents=documents,
                webhook_url=webhook_url,
                idempotency_key=idempotency_key,
            ),
            limits=limits,
            document_bytes_max=runtime.settings.upload_bytes_max,
            clock=runtime.clock,
        )

    submitted = await run_in_threadpool(work)
    base = f"{JOBS_PREFIX}/{submitted.job_id}"
    return {
        "id": submitted.job_id,
        "item_count": submitted.item_count,
        "replayed": submitted.replayed,
        "webhook_secret": submitted.webhook_secret,
        "progress_url": base,
        "report_url": f"{base}/report",
        "results_url": f"{base}/results.zip",
    }


@router.get("", response_model=JobPage)
async def my_jobs(
    request: Request,
    account_id: AccountId,
    state: Annotated[Literal["queued", "running", "completed", "dead"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX)] = 20,
    before_id: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    """The caller's jobs, newest first; page with `before_id`."""
    from emeterai.jobs.service import list_jobs

    runtime = runtime_of(request)

    def work() -> dict[str, Any]:
        with transaction(runtime.sessions) as session:
            jobs = list_jobs(
                session, account_id=account_id, state=state, limit=limit + 1, before_id=before_id
            )
        more = len(jobs) > limit
        return {
            "items": [job.as_dict() for job in jobs[:limit]],
            "next_before_id": jobs[limit - 1].job_id if more else None,
        }

    return await run_in_threadpool(work)


@router.get("/{job_id}", response_model=JobOut)
async def job_status(request: Request, account_id: AccountId, job_id: int) -> dict[str, Any]:
    """Progress: how many documents are queued, running, stamped, failed, dead-lettered."""
    from emeterai.jobs.service import job_progress

    runtime = runtime_of(request)

    def work() -> dict[str, Any]:
        with transaction(runtime.sessions) as session:
            return job_progress(session, job_id, account_id=account_id).as_dict()

    return await run_in_threadpool(work)


@router.get(
    "/{job_id}/report",
    response_model=ReportOut,
    responses={200: {"content": {"text/csv": {}}}},
)
async def job_report(
    request: Request,
    account_id: AccountId,
    job_id: int,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Any:
    """One line per document: its serial, or its error code."""
    from emeterai.jobs.service import job_progress, write_report_csv
    from emeterai.jobs.service import job_report as report_of

    runtime = runtime_of(request)

    def work() -> Any:
        with transaction(runtime.sessions) as session:
            progress = job_progress(session, job_id, account_id=account_id)
            lines = report_of(session, job_id, account_id=account_id)
        if format == "csv":
            text = io.StringIO()
            write_report_csv(lines, text)
            return Response(text.getvalue(), media_type="text/csv")
        return JSONResponse(
            {
                "id": job_id,
                "state": progress.state,
                "documents": [line.as_dict() for line in lines],
            }
        )

    return await run_in_threadpool(work)


@router.get(
    "/{job_id}/results.zip",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "PDFs + report.csv"}},
)
async def job_results(request: Request, account_id: AccountId, job_id: int) -> Response:
    """The stamped PDFs so far, and report.csv, as a ZIP."""
    from emeterai.jobs.service import job_report as report_of
    from emeterai.jobs.service import write_results_zip

    runtime = runtime_of(request)

    def work() -> bytes:
        with transaction(runtime.sessions) as session:
            lines = report_of(session, job_id, account_id=account_id)
        buffer = io.BytesIO()  # bounded: a batch holds at most EMETERAI_JOBS_BYTES_MAX
        write_results_zip(lines, runtime.blobs, buffer)
        return buffer.getvalue()

    content = await run_in_threadpool(work)
    return Response(
        content=content,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="emeterai-job-{job_id}.zip"'},
    )
