"""The signed-in user's own page: balance, orders, stamps, and downloads again."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from emeterai.db import transaction
from emeterai.errors import EmeteraiError
from emeterai.web.bulk import job_row
from emeterai.web.pages import page_for
from emeterai.web.shop import order_context

router = APIRouter(include_in_schema=False)
STAMPS_PER_PAGE = 20
ORDERS_SHOWN = 10
BULK_JOBS_SHOWN = 5


@router.get("/dashboard")
async def dashboard(
    request: Request, before: Annotated[int | None, Query(ge=1)] = None
) -> Response:
    from emeterai.accounts.history import stamp_entries
    from emeterai.channels.orders import list_orders
    from emeterai.jobs.service import list_jobs
    from emeterai.quota import quota_accounts, quota_balance
    from emeterai.stamping.service import release_expired

    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    account_id = page.viewer.account_id
    runtime = page.runtime

    def work() -> dict[str, Any]:
        with transaction(runtime.sessions) as session:
            now = runtime.clock.now()
            accounts = quota_accounts(session, account_id, now=now)
            release_expired(session, now=now, debit_account_id=accounts.quota.id)
            balance = quota_balance(session, account_id, now=now)
            views, _more = list_orders(session, now=now, account_id=account_id, limit=ORDERS_SHOWN)
            stamps, next_before = stamp_entries(
                session,
                account_id,
                retention_days=runtime.settings.stamp_retention_days,
                limit=STAMPS_PER_PAGE,
                before_id=before,
            )
            jobs = list_jobs(session, account_id=account_id, limit=BULK_JOBS_SHOWN)
        return {
            "jobs": [job_row(page, job) for job in jobs],
            "balance": balance,
            "stamps": stamps,
            "next_before": next_before,
            "now": now,
            "orders": [order_context(page, view) for view in views],
            "retention_days": runtime.settings.stamp_retention_days,
        }

    return page.render("dashboard.html", await run_in_threadpool(work))


@router.get("/stamps/{serial}")
async def stamp_done(request: Request, serial: str, new: int = 0) -> Response:
    from emeterai.accounts.history import stamp_entry

    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    account_id = page.viewer.account_id
    runtime = page.runtime

    def work() -> Any:
        with transaction(runtime.sessions) as session:
            return stamp_entry(
                session,
                account_id,
                serial,
                retention_days=runtime.settings.stamp_retention_days,
            )

    try:
        entry = await run_in_threadpool(work)
    except EmeteraiError as error:
        return page.render(
            "error.html",
            {"message": page.error_text(error.code), "back": "/dashboard"},
            status_code=404,
        )
    return page.render(
        "stamp_done.html",
        {
            "entry": entry,
            "new": bool(new),
            "now": runtime.clock.now(),
            "verify_url": runtime.settings.verify_url(entry.serial),
        },
    )


@router.get("/stamps/{serial}/download")
async def download(request: Request, serial: str) -> Response:
    from emeterai.accounts.history import retained_document

    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    account_id = page.viewer.account_id
    runtime = page.runtime

    def work() -> tuple[Any, bytes]:
        with transaction(runtime.sessions) as session:
            return retained_document(
                session,
                runtime.blobs,
                account_id,
                serial,
                retention_days=runtime.settings.stamp_retention_days,
                now=runtime.clock.now(),
            )

    try:
        entry, document = await run_in_threadpool(work)
    except EmeteraiError as error:
        return page.render(
            "error.html",
            {"message": page.error_text(error.code), "back": "/dashboard"},
            status_code=error.status if error.status < 500 else 500,
        )
    return Response(
        document,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="emeterai-{entry.serial}.pdf"',
            "Cache-Control": "private, no-store",
        },
    )
