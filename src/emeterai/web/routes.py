"""Server-rendered pages. Bahasa Indonesia first, English second."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from emeterai.db import transaction
from emeterai.errors import EmeteraiError

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

VERDICT_TEXT = {
    "GENUINE": ("ASLI", "Genuine", "e-Meterai ini sah dan terikat pada dokumen ini."),
    "TAMPERED": ("DIUBAH", "Tampered", "Dokumen diubah setelah dibubuhi e-Meterai."),
    "FORGED": ("PALSU", "Forged", "Gambar e-Meterai tanpa tanda tangan penerbit yang sah."),
    "UNKNOWN_SERIAL": ("TIDAK DIKENAL", "Unknown serial", "Nomor seri tidak pernah diterbitkan."),
    "REUSED": ("DIPAKAI ULANG", "Reused", "Nomor seri ini milik dokumen lain."),
    "REVOKED": ("DICABUT", "Revoked", "e-Meterai ini telah dicabut oleh penerbit."),
    "NOT_STAMPED": ("TANPA METERAI", "Not stamped", "Dokumen ini tidak memuat e-Meterai."),
}


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "home.html", {})


@router.get("/v/{serial}", response_class=HTMLResponse)
async def serial_page(request: Request, serial: str) -> HTMLResponse:
    """The page a stamp's QR code opens."""
    return await _serial_page(request, serial, verification=None)


@router.post("/v/{serial}", response_class=HTMLResponse)
async def serial_page_compare(
    request: Request, serial: str, file: Annotated[UploadFile, File()]
) -> HTMLResponse:
    """Upload a PDF and compare it with the registered serial."""
    from emeterai.api.routes import read_upload
    from emeterai.verify.service import verify_document

    runtime = request.app.state.runtime
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

        verification: dict[str, Any] = await run_in_threadpool(work)
    except EmeteraiError as error:
        verification = {"error": error.code, "detail": error.detail}
    return await _serial_page(request, serial, verification=verification)


async def _serial_page(
    request: Request, serial: str, *, verification: dict[str, Any] | None
) -> HTMLResponse:
    from emeterai.verify.service import serial_status

    runtime = request.app.state.runtime

    def work() -> tuple[Any, str | None]:
        try:
            with transaction(runtime.sessions) as session:
                return serial_status(session, serial), None
        except EmeteraiError as error:
            return None, error.detail

    status, problem = await run_in_threadpool(work)
    context = {
        "serial": serial[:40],
        "status": status,
        "problem": problem,
        "verification": verification,
        "verdict_text": VERDICT_TEXT,
    }
    return templates.TemplateResponse(
        request, "serial.html", context, status_code=200 if status else 404
    )
