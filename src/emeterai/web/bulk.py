"""Bulk stamping in the browser: upload several PDFs or a ZIP, one shared position, then
watch the job (`jobs` package, issue 6) and download the results.

The routes call the jobs use cases in process, scoped to the signed-in account: another
account's job is simply not found. A worker (`emeterai worker`) does the stamping.
"""

from __future__ import annotations

import io
import math
import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from emeterai.api.jobs import read_batch
from emeterai.db import transaction
from emeterai.errors import EmeteraiError, InvalidPositions
from emeterai.web.i18n import N_
from emeterai.web.pages import Page, check_csrf, page_for

router = APIRouter(include_in_schema=False)
JOBS_SHOWN = 10
FINAL = frozenset({"completed", "dead"})
# Bottom-left is 36 pt (half an inch) from both edges, like the default bottom-right.
BOTTOM_LEFT_PT = 36.0

JOB_STATE_TEXT = {
    "queued": N_("Waiting to start"),
    "running": N_("Stamping"),
    "completed": N_("Done"),
    "dead": N_("Stopped: some documents could not be stamped after several tries"),
}
ITEM_STATE_TEXT = {
    "queued": N_("Waiting"),
    "running": N_("Being stamped"),
    "stamped": N_("Stamped"),
    "failed": N_("Not stamped"),
    "dead": N_("Not stamped"),
}


def _limits(request: Request) -> Any:
    from emeterai.api.jobs import job_limits

    return job_limits(request)


def _form_context(page: Page, **values: Any) -> dict[str, Any]:
    from emeterai.jobs.service import list_jobs

    runtime = page.runtime
    assert page.viewer is not None
    account_id = page.viewer.account_id
    with transaction(runtime.sessions) as session:
        jobs = list_jobs(session, account_id=account_id, limit=JOBS_SHOWN)
    limits = _limits(page.request)
    context: dict[str, Any] = {
        "jobs": [job_row(page, job) for job in jobs],
        "documents_max": limits.documents_max,
        "bytes_max_mb": max(1, limits.bytes_max // (1024 * 1024)),
        "key": f"web-bulk-{secrets.token_urlsafe(18)}",
        "error": None,
        "error_code": None,
        "form": {"page": 1, "corner": "bottom-right", "x": "", "y": ""},
    }
    context.update(values)
    return context


def job_row(page: Page, job: Any) -> dict[str, Any]:
    return {
        "id": job.job_id,
        "state": job.state,
        "state_text": page.gettext(JOB_STATE_TEXT.get(job.state, job.state)),
        "count": job.item_count,
        "stamped": job.stamped,
        "not_stamped": job.failed + job.dead,
        "created_at": job.created_at,
    }


@router.get("/bulk")
async def bulk_form(request: Request) -> Response:
    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    context = await run_in_threadpool(_form_context, page)
    return page.render("bulk.html", context)


@router.post("/bulk")
async def bulk_submit(
    request: Request,
    files: Annotated[list[UploadFile], File()],
    page: Annotated[int, Form(ge=1, le=100_000)] = 1,
    corner: Annotated[Literal["bottom-right", "bottom-left", "exact"], Form()] = "bottom-right",
    x: Annotated[str, Form(max_length=30)] = "",
    y: Annotated[str, Form(max_length=30)] = "",
    key: Annotated[str, Form(max_length=100)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    from emeterai.jobs.intake import Bounds, bulk_documents
    from emeterai.jobs.service import BulkRequest, shared_position, submit_bulk

    view = await page_for(request)
    if view.viewer is None:
        return view.login_redirect()
    account_id = view.viewer.account_id
    runtime = view.runtime
    limits = _limits(request)
    try:
        check_csrf(view, csrf_token)
        x_pt, y_pt = _position(corner, x, y)
        uploaded = await read_batch(files, limits.bytes_max, skip_empty=True)

        def work() -> int:
            documents = bulk_documents(
                uploaded,
                bounds=Bounds(
                    limits.documents_max, limits.bytes_max, runtime.settings.upload_bytes_max
                ),
                shared=shared_position(page, x_pt, y_pt),
            )
            submitted = submit_bulk(
                runtime.sessions,
                runtime.blobs,
                BulkRequest(
                    account_id=account_id,
                    documents=documents,
                    idempotency_key=key if key.startswith("web-bulk-") else None,
                ),
                limits=limits,
                document_bytes_max=runtime.settings.upload_bytes_max,
                clock=runtime.clock,
            )
            return submitted.job_id

        job_id = await run_in_threadpool(work)
    except EmeteraiError as error:
        message = view.error_text(error.code)
        if error.code == "PDF_TOO_LARGE":
            message = view.error_text(
                error.code, limit=f"{runtime.settings.upload_bytes_max / (1024 * 1024):.0f} MB"
            )
        context = await run_in_threadpool(_form_context, view)
        context.update(
            error=message,
            error_code=error.code,
            form={"page": page, "corner": corner, "x": x, "y": y},
        )
        if key.startswith("web-bulk-"):
            context["key"] = key  # the same batch sent again is the same job
        return view.render(
            "bulk.html", context, status_code=error.status if error.status < 500 else 500
        )
    return view.redirect(f"/bulk/{job_id}")


def _position(corner: str, x: str, y: str) -> tuple[float | None, float | None]:
    if corner == "bottom-right":
        return None, None
    if corner == "bottom-left":
        return BOTTOM_LEFT_PT, BOTTOM_LEFT_PT
    try:
        x_pt, y_pt = float(x), float(y)
    except ValueError as error:
        raise InvalidPositions("give x and y as numbers of points") from error
    if not (math.isfinite(x_pt) and math.isfinite(y_pt)):
        raise InvalidPositions("a coordinate must be a finite number of points")
    return x_pt, y_pt


def _retry_after_s(progress: Any) -> int | None:
    """How long the page waits before asking again: nothing once final; a little longer
    while the job waits for a worker than while documents are being stamped."""
    if progress.state in FINAL:
        return None
    return 2 if progress.state == "running" else 3


def _job(page: Page, job_id: int) -> dict[str, Any]:
    from emeterai.jobs.service import job_progress, job_report

    runtime = page.runtime
    assert page.viewer is not None
    account_id = page.viewer.account_id
    with transaction(runtime.sessions) as session:
        progress = job_progress(session, job_id, account_id=account_id)
        lines = job_report(session, job_id, account_id=account_id)
    total = max(1, progress.item_count)
    return {
        "id": progress.job_id,
        "state": progress.state,
        "state_text": page.gettext(JOB_STATE_TEXT.get(progress.state, progress.state)),
        "final": progress.state in FINAL,
        "count": progress.item_count,
        "stamped": progress.stamped,
        "not_stamped": progress.failed + progress.dead,
        "pending": progress.queued + progress.running,
        "percent": round(100 * progress.done / total),
        "purged": progress.purged,
        "created_at": progress.created_at,
        "retry_after_s": _retry_after_s(progress),
        "lines": [
            {
                "position": line.position,
                "name": line.name,
                "state": line.state,
                "state_text": page.gettext(ITEM_STATE_TEXT.get(line.state, line.state)),
                "serial": line.serial,
                "problem": page.error_text(line.error_code)
                if line.error_code and line.state != "stamped"
                else None,
                "error_code": line.error_code if line.state != "stamped" else None,
            }
            for line in lines
        ],
    }


async def _job_or_error(page: Page, job_id: int) -> dict[str, Any] | Response:
    try:
        return await run_in_threadpool(_job, page, job_id)
    except EmeteraiError as error:
        return page.render(
            "error.html",
            {"message": page.error_text(error.code), "back": "/bulk"},
            status_code=404,
        )


@router.get("/bulk/{job_id}")
async def bulk_job(request: Request, job_id: int) -> Response:
    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    job = await _job_or_error(page, job_id)
    if isinstance(job, Response):
        return job
    return page.render("bulk_job.html", {"job": job})


@router.get("/bulk/{job_id}/status.json")
async def bulk_job_status(request: Request, job_id: int) -> Response:
    """What bulk.js polls; `Retry-After` says when to ask again (absent once final)."""
    page = await page_for(request)
    if page.viewer is None:
        return JSONResponse({"code": "UNAUTHENTICATED"}, status_code=401)
    try:
        job = await run_in_threadpool(_job, page, job_id)
    except EmeteraiError as error:
        return JSONResponse({"code": error.code}, status_code=404)
    job.pop("created_at")
    headers = {"Cache-Control": "no-store"}
    if job["retry_after_s"]:
        headers["Retry-After"] = str(job["retry_after_s"])
    return JSONResponse(job, headers=headers)


@router.get("/bulk/{job_id}/results.zip")
async def bulk_results(request: Request, job_id: int) -> Response:
    """The stamped PDFs so far and report.csv (jobs.service.write_results_zip)."""
    from emeterai.jobs.service import job_report, write_results_zip

    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    runtime = page.runtime
    account_id = page.viewer.account_id

    def work() -> bytes:
        with transaction(runtime.sessions) as session:
            lines = job_report(session, job_id, account_id=account_id)
        buffer = io.BytesIO()  # bounded: a batch holds at most EMETERAI_JOBS_BYTES_MAX
        write_results_zip(lines, runtime.blobs, buffer)
        return buffer.getvalue()

    try:
        content = await run_in_threadpool(work)
    except EmeteraiError as error:
        return page.render(
            "error.html",
            {"message": page.error_text(error.code), "back": "/bulk"},
            status_code=404,
        )
    return Response(
        content,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="emeterai-job-{job_id}.zip"',
            "Cache-Control": "private, no-store",
        },
    )
