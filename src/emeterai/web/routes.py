"""Server-rendered pages. Bahasa Indonesia first, English by switch (docs/web.md).

This module gathers the web routers: public pages here (home, language, assets, verify,
`/v/{serial}`), and the signed-in ones in their own modules.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from emeterai.db import transaction
from emeterai.errors import EmeteraiError
from emeterai.web import auth, bulk, consoles, dashboard, shop, stamp, waiting
from emeterai.web.i18n import LANGUAGES
from emeterai.web.pages import LANG_COOKIE, Page, page_for, safe_next

router = APIRouter(include_in_schema=False)
STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {
    "app.css": "text/css",
    "stamp.js": "text/javascript",
    "live.js": "text/javascript",
    "upload.js": "text/javascript",
    "bulk.js": "text/javascript",
}


@router.get("/")
async def home(request: Request) -> Response:
    page = await page_for(request)
    room = getattr(request.app.state, "waiting_room", None)
    queue = None
    if room is not None:
        waiting = room.snapshot.queue_length
        queue = {
            "waiting": waiting,
            "eta_minutes": max(1, round(room.new_arrival_eta_s() / 60 + 0.49)),
        }
    return page.render("home.html", {"queue": queue})


@router.get("/lang/{language}")
async def choose_language(request: Request, language: str, next: str = "/") -> Response:
    page = await page_for(request)
    response = page.redirect(safe_next(next, default="/"))
    if language in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE,
            language,
            max_age=365 * 86400,
            samesite="lax",
            secure=page.secure(),
            path="/",
        )
    return response


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC_FILES:
        return Response(status_code=404)
    return FileResponse(
        STATIC_DIR / name,
        media_type=STATIC_FILES[name],
        headers={"Cache-Control": "public, max-age=300"},
    )


async def _verify(page: Page, file: UploadFile) -> dict[str, Any]:
    from emeterai.api.routes import read_upload
    from emeterai.verify.service import verify_document

    runtime = page.runtime
    try:
        data = await read_upload(file, runtime.settings.upload_bytes_max)

        def work() -> dict[str, Any]:
            with transaction(runtime.sessions) as session:
                return verify_document(
                    session,
                    data,
                    trust_roots_pem=runtime.trust_roots(),
                    bytes_max=runtime.settings.upload_bytes_max,
                ).as_dict()

        result = await run_in_threadpool(work)
        if result.get("signed_at"):
            result["signed_at"] = datetime.fromisoformat(result["signed_at"])
        return result
    except EmeteraiError as error:
        limit = f"{runtime.settings.upload_bytes_max / (1024 * 1024):.0f} MB"
        return {
            "error": error.code,
            "message": page.error_text(error.code, limit=limit)
            if error.code == "PDF_TOO_LARGE"
            else page.error_text(error.code),
        }


@router.get("/verify")
async def verify_form(
    request: Request, serial: Annotated[str, Query(max_length=60)] = ""
) -> Response:
    page = await page_for(request)
    if serial.strip():
        return page.redirect(f"/v/{serial.strip().replace('/', '')[:40]}")
    return page.render("verify.html", {"verification": None})


@router.post("/verify")
async def verify_upload(request: Request, file: Annotated[UploadFile, File()]) -> Response:
    """No account and no CSRF token: verifying changes nothing."""
    page = await page_for(request)
    verification = await _verify(page, file)
    return page.render(
        "verify.html",
        {"verification": verification},
        status_code=422 if "error" in verification else 200,
    )


@router.get("/v/{serial}")
async def serial_page(request: Request, serial: str) -> Response:
    """The page a stamp's QR code opens."""
    page = await page_for(request)
    return await _serial_page(page, serial, verification=None)


@router.post("/v/{serial}")
async def serial_page_compare(
    request: Request, serial: str, file: Annotated[UploadFile, File()]
) -> Response:
    """Upload a PDF and compare it with the registered serial."""
    page = await page_for(request)
    verification = await _verify(page, file)
    return await _serial_page(page, serial, verification=verification)


async def _serial_page(page: Page, serial: str, *, verification: dict[str, Any] | None) -> Response:
    from emeterai.verify.service import serial_status

    runtime = page.runtime

    def work() -> tuple[Any, str | None]:
        try:
            with transaction(runtime.sessions) as session:
                return serial_status(session, serial), None
        except EmeteraiError as error:
            return None, error.code

    status, problem = await run_in_threadpool(work)
    context = {
        "serial": serial[:40],
        "status": status,
        "problem": page.error_text(problem) if problem else None,
        "verification": verification,
    }
    return page.render("serial.html", context, status_code=200 if status else 404)


router.include_router(auth.router)
router.include_router(dashboard.router)
router.include_router(stamp.router)
router.include_router(shop.router)
router.include_router(waiting.router)
router.include_router(consoles.router)
router.include_router(bulk.router)
