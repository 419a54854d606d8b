"""The stamp flow: upload, see the pages, place the stamp, confirm, download."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from emeterai.db import transaction
from emeterai.errors import EmeteraiError, PositionOffPage, QuotaExhausted
from emeterai.web import drafts
from emeterai.web.pages import Page, check_csrf, page_for

router = APIRouter(include_in_schema=False)
PREVIEW_WIDTH_PX = 1000
STAMP_SIZE_PT = 100.0
MARGIN_PT = 36.0


def _megabytes(size_bytes: int) -> str:
    return f"{size_bytes / (1024 * 1024):.0f} MB"


def _available(page: Page, account_id: int) -> int:
    from emeterai.quota import quota_accounts, quota_balance
    from emeterai.stamping.service import release_expired

    runtime = page.runtime
    with transaction(runtime.sessions) as session:
        now = runtime.clock.now()
        accounts = quota_accounts(session, account_id, now=now)
        release_expired(session, now=now, debit_account_id=accounts.quota.id)
        return quota_balance(session, account_id, now=now).available


def _refusal(page: Page, error: EmeteraiError) -> str:
    settings = page.runtime.settings
    if error.code == "PDF_TOO_LARGE":
        return page.error_text(error.code, limit=_megabytes(settings.upload_bytes_max))
    if error.code == "PDF_TOO_MANY_PAGES":
        return page.error_text(error.code, limit=settings.pages_max)
    return page.error_text(error.code)


@router.get("/stamp")
async def upload_form(request: Request) -> Response:
    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    available = await run_in_threadpool(_available, page, page.viewer.account_id)
    return page.render(
        "stamp_upload.html",
        {"available": available, "error": None, "error_code": None},
    )


@router.post("/stamp")
async def upload(
    request: Request,
    file: Annotated[UploadFile, File()],
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    from emeterai.api.routes import read_upload

    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    viewer = page.viewer
    settings = page.runtime.settings
    try:
        check_csrf(page, csrf_token)
        document = await read_upload(file, settings.upload_bytes_max)

        def work() -> str:
            from emeterai.pdf import inspect_pdf
            from emeterai.stamping.service import StampRequest, placement_for, validate_document

            facts = inspect_pdf(document, pages_max=settings.pages_max)
            validate_document(
                StampRequest(
                    account_id=viewer.account_id,
                    document=document,
                    placement=placement_for(
                        document, page=1, x_pt=None, y_pt=None, settings=settings
                    ),
                ),
                settings,
            )
            if _available(page, viewer.account_id) < 1:
                raise QuotaExhausted()
            return drafts.save_draft(
                settings,
                viewer.account_id,
                filename=file.filename or "document.pdf",
                document=document,
                pages=[(box.width_pt, box.height_pt) for box in facts.pages],
            )

        draft_id = await run_in_threadpool(work)
    except EmeteraiError as error:
        available = await run_in_threadpool(_available, page, viewer.account_id)
        return page.render(
            "stamp_upload.html",
            {"available": available, "error": _refusal(page, error), "error_code": error.code},
            status_code=error.status if error.status < 500 else 500,
        )
    return page.redirect(f"/stamp/{draft_id}")


def _place_context(
    draft: drafts.Draft, page_number: int, x: float | None, y: float | None
) -> dict[str, Any]:
    page_number = page_number if 1 <= page_number <= len(draft.pages) else 1
    width_pt, height_pt = draft.pages[page_number - 1]
    default_x = max(0.0, width_pt - STAMP_SIZE_PT - MARGIN_PT)
    default_y = min(MARGIN_PT, max(0.0, height_pt - STAMP_SIZE_PT))
    return {
        "draft": draft,
        "page_number": page_number,
        "width_pt": width_pt,
        "height_pt": height_pt,
        "x": round(default_x if x is None else x, 1),
        "y": round(default_y if y is None else y, 1),
        "x_max": round(max(0.0, width_pt - STAMP_SIZE_PT), 1),
        "y_max": round(max(0.0, height_pt - STAMP_SIZE_PT), 1),
        "pages_json": [[round(w, 2), round(h, 2)] for w, h in draft.pages],
    }


def _coordinate(text: str | None, high: float) -> float | None:
    """A coordinate from the page's URL (kept there by stamp.js): a finite number within
    the page, anything else ignored (the default position is used)."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return min(max(value, 0.0), high) if math.isfinite(value) else None


@router.get("/stamp/{draft_id}")
async def place_form(
    request: Request,
    draft_id: str,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    x: Annotated[str | None, Query(max_length=30)] = None,
    y: Annotated[str | None, Query(max_length=30)] = None,
) -> Response:
    """The placement page. `?page=&x=&y=` restore a placement: the browser keeps them in
    the URL, so a confirmation sent to the waiting room comes back to the same spot."""
    view = await page_for(request)
    if view.viewer is None:
        return view.login_redirect()
    viewer = view.viewer
    try:
        draft = await run_in_threadpool(
            drafts.load_draft, view.runtime.settings, viewer.account_id, draft_id
        )
    except EmeteraiError as error:
        return view.render(
            "error.html",
            {"message": view.error_text(error.code), "back": "/stamp"},
            status_code=404,
        )
    context = _place_context(draft, page, None, None)
    if x is not None and y is not None:
        x_pt = _coordinate(x, context["x_max"])
        y_pt = _coordinate(y, context["y_max"])
        if x_pt is not None and y_pt is not None:
            context = _place_context(draft, context["page_number"], x_pt, y_pt)
    context["error"] = None
    return view.render("stamp_place.html", context)


@router.get("/stamp/{draft_id}/preview/{page_number}.png")
async def preview(request: Request, draft_id: str, page_number: int) -> Response:
    from emeterai.pdf.preview import render_page_preview

    view = await page_for(request)
    if view.viewer is None:
        return Response(status_code=401)
    settings = view.runtime.settings
    account_id = view.viewer.account_id

    def work() -> bytes:
        cached = drafts.preview_path(settings, account_id, draft_id, page_number)
        if cached.exists():
            return cached.read_bytes()
        draft = drafts.load_draft(settings, account_id, draft_id)
        png = render_page_preview(draft.document, page_number, width_px=PREVIEW_WIDTH_PX).png
        cached.write_bytes(png)
        return png

    try:
        png = await run_in_threadpool(work)
    except EmeteraiError as error:
        return Response(status_code=404 if error.status < 500 else 500)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/stamp/{draft_id}")
async def confirm(
    request: Request,
    draft_id: str,
    page: Annotated[int, Form(ge=1, le=100_000)],
    x: Annotated[float, Form()],
    y: Annotated[float, Form()],
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    from emeterai.pdf import Placement
    from emeterai.stamping.service import StampRequest, issue_stamp

    view = await page_for(request)
    if view.viewer is None:
        return view.login_redirect()
    viewer = view.viewer
    runtime = view.runtime
    settings = runtime.settings
    try:
        draft = await run_in_threadpool(drafts.load_draft, settings, viewer.account_id, draft_id)
    except EmeteraiError as error:
        return view.render(
            "error.html",
            {"message": view.error_text(error.code), "back": "/stamp"},
            status_code=404,
        )
    try:
        check_csrf(view, csrf_token)
        if not (math.isfinite(x) and math.isfinite(y)):
            raise PositionOffPage()

        def work() -> str:
            stamped = issue_stamp(
                runtime.sessions,
                StampRequest(
                    account_id=viewer.account_id,
                    document=draft.document,
                    placement=Placement(page=page, x_pt=round(x, 2), y_pt=round(y, 2)),
                    idempotency_key=f"web-draft-{draft_id}",
                ),
                sign=request.app.state.signer,
                blobs=runtime.blobs,
                settings=settings,
                clock=runtime.clock,
            )
            drafts.delete_draft(settings, viewer.account_id, draft_id)
            return stamped.serial

        serial = await run_in_threadpool(work)
    except EmeteraiError as error:
        context = _place_context(
            draft, page, x if math.isfinite(x) else None, y if math.isfinite(y) else None
        )
        context["error"] = _refusal(view, error)
        context["error_code"] = error.code
        return view.render(
            "stamp_place.html", context, status_code=error.status if error.status < 500 else 500
        )
    return view.redirect(f"/stamps/{serial}?new=1")
