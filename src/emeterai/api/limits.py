"""Bound every request body before it is parsed (the multipart parser would spool any size)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emeterai.api.problems import PROBLEM_JSON

MULTIPART_OVERHEAD_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    def __init__(
        self, app: ASGIApp, *, bytes_max: int, bytes_max_by_prefix: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.default_bytes_max = bytes_max + MULTIPART_OVERHEAD_BYTES
        self.bytes_max = self.default_bytes_max
        # A few routes take more in one request (a bulk batch); each names its own bound.
        self.bytes_max_by_prefix = {
            prefix: limit + MULTIPART_OVERHEAD_BYTES
            for prefix, limit in (bytes_max_by_prefix or {}).items()
        }

    def _limit_for(self, path: str) -> int:
        for prefix, limit in self.bytes_max_by_prefix.items():
            if path.startswith(prefix):
                return limit
        return self.default_bytes_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bytes_max = self._limit_for(scope.get("path", ""))
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > bytes_max:
            await self._refuse(send, bytes_max)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > bytes_max:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, bytes_max)

    async def _refuse(self, send: Send, bytes_max: int) -> None:
        body = json.dumps(
            {
                "type": "https://emeterai.example/problems/pdf-too-large",
                "title": "The PDF is larger than the limit",
                "status": 413,
                "detail": f"the request body exceeds {bytes_max} bytes",
                "code": "PDF_TOO_LARGE",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
