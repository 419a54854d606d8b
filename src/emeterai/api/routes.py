"""JSON API, version 1. Each route parses, calls one use case, and maps the result."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from emeterai.db import read_transaction, transaction
from emeterai.errors import NotAPdf, PdfTooLarge, PositionOffPage, SerialNotFound, Unauthenticated
from emeterai.runtime import Runtime

router = APIRouter(prefix="/api/v1")
UPLOAD_CHUNK_BYTES = 1024 * 1024
PAGE_SIZE_MAX = 100


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def read_upload(upload: UploadFile, bytes_max: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(UPLOAD_CHUNK_BYTES):
        size += len(chunk)
        if size > bytes_max:
            raise PdfTooLarge(f"the file is larger than the limit of {bytes_max} bytes")
        chunks.append(chunk)
    if size == 0:
        raise NotAPdf("the uploaded file is empty")
    return b"".join(chunks)


def _authenticate(runtime: Runtime, token: str) -> int:
    # A read transaction: on SQLite, Argon2 must not run under the single write lock.
    with read_transaction(runtime.sessions) as session:
        return runtime.tokens.account_id(session, token)


async def account_id_of(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> int:
    if authorization is None or not authorization.startswith("Bearer "):
        raise Unauthenticated("send 'Authorization: Bearer <API token>'")
    token = authorization.removeprefix("Bearer ").strip()
    if len(token) > 200:
        raise Unauthenticated("the API token is malformed")
    return await run_in_threadpool(_authenticate, runtime_of(request), token)


AccountId = Annotated[int, Depends(account_id_of)]


class QuotaOut(BaseModel):
    available: int
    reserved: int
    used: int
    credited: int


class StampOut(BaseModel):
    serial: str
    page: int
    x_pt: float
    y_pt: float
    document_sha256: str
    size_bytes: int
    signed_at: str
    verify_url: str


class StampPage(BaseModel):
    items: list[StampOut]
    next_before_id: int | None


class SerialOut(BaseModel):
    serial: str
    state: str
    stamped_at: str | None
    document_sha256: str | None
    revoked_at: str | None
    revoked_reason: str | None


PDF_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/pdf": {}}, "description": "The stamped PDF."}
}


@router.post("/stamps", response_class=Response, responses=PDF_RESPONSE)
async def create_stamp(
    request: Request,
    account_id: AccountId,
    file: Annotated[UploadFile, File(description="The PDF to stamp.")],
    page: Annotated[int, Form(ge=1, le=100_000)] = 1,
    x: Annotated[float | None, Form(description="Points from the visible left edge.")] = None,
    y: Annotated[float | None, Form(description="Points from the visible bottom edge.")] = None,
    additional: Annotated[bool, Form(description="Allow a second party's stamp.")] = False,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    """Stamp a PDF with one e-Meterai from the caller's quota."""
    from emeterai.stamping.service import StampRequest, issue_stamp, placement_for

    runtime = runtime_of(request)
    settings = runtime.settings
    for value in (x, y):
        if value is not None and not math.isfinite(value):
            raise PositionOffPage("a coordinate must be a finite number of points")
    document = await read_upload(file, settings.upload_bytes_max)

    def work() -> Any:
        placement = placement_for(document, page=page, x_pt=x, y_pt=y, settings=settings)
        return issue_stamp(
            runtime.sessions,
            StampRequest(
                account_id=account_id,
                document=document,
                placement=placement,
                idempotency_key=idempotency_key,
                allow_additional=additional,
            ),
            sign=request.app.state.signer,
            blobs=runtime.blobs,
            settings=settings,
            clock=runtime.clock,
        )

    stamped = await run_in_threadpool(work)
    return Response(
        content=stamped.document,
        media_type="application/pdf",
        headers={
            "X-Emeterai-Serial": stamped.serial,
            "X-Emeterai-Replayed": "true" if stamped.replayed else "false",
            "Content-Disposition": f'attachment; filename="emeterai-{stamped.serial}.pdf"',
        },
    )


@router.post("/verify")
async def verify(
    request: Request, file: Annotated[UploadFile, File(description="The PDF to check.")]
) -> dict[str, Any]:
    """Check a PDF's e-Meterai. No account needed."""
    from emeterai.verify.service import verify_document

    runtime = runtime_of(request)
    data = await read_upload(file, runtime.settings.upload_bytes_max)

    def work() -> dict[str, Any]:
        with read_transaction(runtime.sessions) as session:
            return verify_document(
                session,
                data,
                trust_roots_pem=runtime.trust_roots(),
                bytes_max=runtime.settings.upload_bytes_max,
                now=runtime.clock.now(),
            ).as_dict()

    return await run_in_threadpool(work)


@router.get("/serials/{serial}", response_model=SerialOut)
async def serial_status(request: Request, serial: str) -> dict[str, Any]:
    """A serial's status, stamp time and document digest. Never document content."""
    from emeterai.verify.service import serial_status as look_up

    runtime = runtime_of(request)

    def work() -> dict[str, Any]:
        with read_transaction(runtime.sessions) as session:
            status = look_up(session, serial)
        if status is None:
            raise SerialNotFound(f"no e-Meterai has serial {serial[:30]}")
        return status.as_dict()

    return await run_in_threadpool(work)


@router.get("/me/quota", response_model=QuotaOut)
async def my_quota(request: Request, account_id: AccountId) -> dict[str, int]:
    from emeterai.quota import quota_accounts, quota_balance
    from emeterai.stamping.service import release_expired

    runtime = runtime_of(request)

    def work() -> dict[str, int]:
        with transaction(runtime.sessions) as session:
            now = runtime.clock.now()
            accounts = quota_accounts(session, account_id, now=now)
            release_expired(session, now=now, debit_account_id=accounts.quota.id)
            return quota_balance(session, account_id, now=now).as_dict()

    return await run_in_threadpool(work)


@router.get("/me/stamps", response_model=StampPage)
async def my_stamps(
    request: Request,
    account_id: AccountId,
    limit: Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX)] = 50,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> dict[str, Any]:
    """The caller's own stamps, newest first; page with `before_id`."""
    from emeterai.stamping.service import list_stamps

    runtime = runtime_of(request)

    def work() -> dict[str, Any]:
        with read_transaction(runtime.sessions) as session:
            rows = list_stamps(session, account_id, limit=limit + 1, before_id=before_id)
        items = [
            {
                "serial": row.serial,
                "page": row.page,
                "x_pt": row.x_pt,
                "y_pt": row.y_pt,
                "document_sha256": row.document_sha256,
                "size_bytes": row.size_bytes,
                "signed_at": row.signed_at.isoformat(),
                "verify_url": runtime.settings.verify_url(row.serial),
            }
            for row in rows[:limit]
        ]
        more = len(rows) > limit
        return {"items": items, "next_before_id": rows[limit - 1].id if more else None}

    return await run_in_threadpool(work)


@router.get("/me/stamps/{serial}/document", response_class=Response, responses=PDF_RESPONSE)
async def my_stamped_document(request: Request, account_id: AccountId, serial: str) -> Response:
    """Download one of the caller's stamped documents again."""
    from emeterai.stamping.service import stamped_document_of

    runtime = runtime_of(request)

    def work() -> tuple[str, bytes]:
        with read_transaction(runtime.sessions) as session:
            return stamped_document_of(session, runtime.blobs, account_id, serial)

    found_serial, document = await run_in_threadpool(work)
    return Response(
        content=document,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="emeterai-{found_serial}.pdf"'},
    )
