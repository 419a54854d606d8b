"""The one place HTTP maps errors: every refusal is application/problem+json with a `code`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from emeterai.errors import EmeteraiError

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("emeterai.api")

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "TOO_MANY_REQUESTS",
}


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"https://emeterai.example/problems/{code.lower().replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def from_error(error: EmeteraiError) -> JSONResponse:
    extra = {
        key: value for key, value in error.extra.items() if isinstance(value, str | int | list)
    }
    return problem(error.status, error.code, error.title, error.detail, **extra)


def install(app: FastAPI) -> None:
    @app.exception_handler(EmeteraiError)
    async def _domain(_: Request, error: EmeteraiError) -> JSONResponse:
        if error.status >= 500:
            log.error("refused with %s: %s", error.code, error.detail)
        return from_error(error)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, error: RequestValidationError) -> JSONResponse:
        fields = [
            {
                "field": ".".join(str(part) for part in item.get("loc", ())),
                "message": item.get("msg", ""),
            }
            for item in error.errors()[:20]
        ]
        return problem(422, "BAD_INPUT", "The request is not valid", "see `errors`", errors=fields)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, error: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, "HTTP_ERROR")
        return problem(
            error.status_code, code, code.replace("_", " ").capitalize(), str(error.detail)
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return problem(
            500, "INTERNAL", "Internal error", "an unexpected error; nothing was charged"
        )
