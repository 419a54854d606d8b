"""The waiting room at the edge: an ASGI middleware, the queue and status JSON, /metrics.

The pages (/antrean, /status) are the web's, in web/waiting.py, built on the same room.

The middleware decides before any body is parsed, so a refusal costs microseconds and no
database row. The protocol is in docs/admission.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emeterai.admission.room import RequestFacts, Verdict, WaitingRoom, lanes_of_tokens
from emeterai.admission.settings import AdmissionSettings
from emeterai.admission.status import build_status
from emeterai.admission.store import AdmissionStore
from emeterai.admission.tickets import LANES, TicketKeys, load_master_secret
from emeterai.api.metrics import CONTENT_TYPE, Metrics
from emeterai.api.problems import PROBLEM_JSON
from emeterai.config import Settings
from emeterai.errors import Busy, EmeteraiError, Queued, RateLimited

__all__ = [
    "AdmissionMiddleware",
    "admission_lifespan",
    "build_waiting_room",
    "prepare_store",
    "router",
]

log = logging.getLogger("emeterai.admission")
TICKET_HEADER = "x-queue-ticket"
TICKET_COOKIE = "emeterai_ticket"
SESSION_COOKIE = "emeterai_session"
UNBOUNDED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
CONTROL_EVERY_S = 1.0
FLUSH_EVERY_S = 10.0
STATUS_CACHE_S = 5.0
# Slots a process may grow to, per signing process (docs/admission.md, "Bounded work").
SLOTS_PER_SIGNER_MAX = 3
router = APIRouter(include_in_schema=True)


def store_url(settings: Settings, admission: AdmissionSettings) -> str:
    if admission.store_url:
        return admission.store_url
    if settings.database_url and not settings.database_url.startswith("sqlite"):
        return settings.database_url
    return f"sqlite:///{(settings.data_dir / 'admission.db').resolve()}"


def prepare_store(settings: Settings) -> None:
    """Create the admission store (and, on SQLite, switch it to WAL) once, before the
    workers start: N workers creating a new SQLite file at the same moment can fail in
    `PRAGMA journal_mode=WAL`, which takes the file's exclusive lock without waiting."""
    AdmissionStore.open(store_url(settings, AdmissionSettings())).close()


def read_sessions(url: str) -> Any:
    """Sessions for the lane's two reads. On SQLite these use a plain deferred BEGIN (WAL
    readers never wait for the writer), unlike the domain engine's BEGIN IMMEDIATE, so a
    burst of arrivals never competes with stamping for the write lock."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 5, "check_same_thread": False})
    else:
        engine = create_engine(url, pool_size=4, max_overflow=4, pool_pre_ping=True)
    return sessionmaker(engine, expire_on_commit=False)


def build_waiting_room(
    settings: Settings, admission: AdmissionSettings, *, sessions: Any
) -> WaitingRoom:
    secret = admission.secret.get_secret_value() if admission.secret else None
    keys = TicketKeys(
        load_master_secret(secret, settings.data_dir),
        rotation_s=admission.key_rotation_s,
        ticket_ttl_s=admission.ticket_ttl_s,
    )
    return WaitingRoom(
        admission,
        keys=keys,
        store=AdmissionStore.open(store_url(settings, admission)),
        slot_bounds=slot_bounds(admission, settings.signing_process_count),
        classify=lambda tokens: lanes_of_tokens(sessions, tokens),
    )


def slot_bounds(admission: AdmissionSettings, signing_processes: int) -> tuple[int, int]:
    """Pinned by EMETERAI_ADMISSION_INFLIGHT_MAX; otherwise from one slot per signing
    process up to SLOTS_PER_SIGNER_MAX, as the latency allows (SlotSizer)."""
    if admission.inflight_max:
        return admission.inflight_max, admission.inflight_max
    return signing_processes, SLOTS_PER_SIGNER_MAX * signing_processes


async def _tick_forever(room: WaitingRoom, metrics: Metrics) -> None:
    last = last_control = last_flush = time.monotonic()
    while True:
        await asyncio.sleep(room.settings.tick_s)
        now = time.monotonic()
        try:
            await room.run_tick(min(now - last, 2.0))
        except Exception as error:  # a busy store is retried on the next tick
            log.warning("admission tick failed: %s", type(error).__name__)
        last = now
        if now - last_control >= CONTROL_EVERY_S:
            last_control = now
            room.control()
            metrics.rate.set(room.controller.rate_per_s)
            metrics.capacity.set(room.controller.capacity_per_s or 0.0)
            metrics.completed.set(room.controller.completed_per_s())
            metrics.demand.set(room.controller.last.demand)
            metrics.slots.set(room.slots.limit)
            metrics.observe_write_lock()
        if now - last_flush >= FLUSH_EVERY_S:
            last_flush = now
            with suppress(Exception):
                await asyncio.to_thread(room.flush_samples)


@asynccontextmanager
async def admission_lifespan(
    app: FastAPI, settings: Settings, admission: AdmissionSettings
) -> AsyncIterator[None]:
    """Builds the waiting room (even when switched off: /status and /metrics use it)."""
    readers = read_sessions(settings.resolved_database_url)
    room = build_waiting_room(settings, admission, sessions=readers)
    app.state.waiting_room = room
    app.state.admission = admission
    await room.run_tick(0.0)
    ticker = asyncio.create_task(_tick_forever(room, app.state.metrics))
    try:
        yield
    finally:
        ticker.cancel()
        with suppress(asyncio.CancelledError):
            await ticker
        with suppress(Exception):
            await asyncio.to_thread(room.flush_samples)
        room.close()
        readers.kw["bind"].dispose()


# --- the middleware -------------------------------------------------------------------


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {key.lower(): value for key, value in scope["headers"]}


def _cookies(raw: bytes | None) -> dict[str, str]:
    found: dict[str, str] = {}
    if not raw:
        return found
    for part in raw.decode("latin-1").split(";"):
        name, _, value = part.strip().partition("=")
        if name in (TICKET_COOKIE, SESSION_COOKIE):
            found[name] = value.strip()[:200]
    return found


def _cookie(name: str, value: str, max_age_s: int, secure: bool) -> tuple[bytes, bytes]:
    flags = f"; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Lax"
    return b"set-cookie", f"{name}={value}{flags}{'; Secure' if secure else ''}".encode()


async def _drain(receive: Receive) -> None:
    """Read (and drop) the request body, so a refused upload never ends in a reset."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, *, admission: AdmissionSettings) -> None:
        self.app = app
        self.enabled = admission.enabled
        self.routes = admission.protected_routes()
        self.trusted = admission.trusted_proxy_set()
        self.local_wait_s = admission.local_wait_s

    def _protected(self, method: str, path: str) -> bool:
        return any(method == m and path.startswith(prefix) for m, prefix in self.routes)

    def _address(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        forwarded = headers.get(b"x-forwarded-for")
        if forwarded and peer in self.trusted:
            return forwarded.decode("latin-1").split(",")[0].strip()[:64] or peer
        return str(peer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        room: WaitingRoom | None = getattr(state, "waiting_room", None)
        metrics: Metrics = state.metrics
        path: str = scope["path"]
        recorded: dict[str, Any] = {"status": 500, "code": ""}

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                recorded["status"] = message["status"]
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                recorded["problem"] = content_type.startswith(PROBLEM_JSON.encode())
            elif message["type"] == "http.response.body" and recorded.get("problem"):
                recorded["problem"] = False
                with suppress(ValueError, UnicodeDecodeError):
                    code = json.loads(message.get("body", b"")).get("code", "")
                    recorded["code"] = str(code)[:40]
            await send(message)

        try:
            if room is None or path in UNBOUNDED_PATHS or not self.enabled:
                await self.app(scope, receive, observed_send)
            elif self._protected(scope["method"], path):
                await self._protected_call(room, metrics, scope, receive, observed_send)
            else:
                await self._other_call(room, metrics, scope, receive, observed_send)
        finally:
            metrics.responses.labels(str(recorded["status"]), recorded["code"]).inc()
            if room is not None and path not in UNBOUNDED_PATHS:
                room.count_response(int(recorded["status"]))

    async def _other_call(
        self, room: WaitingRoom, metrics: Metrics, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if not await room.other_slots.acquire(0):
            await _drain(receive)
            await self._refuse(scope, send, Busy(), None, 1, False, room)
            return
        gauge = metrics.inflight.labels("other")
        gauge.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            gauge.dec()
            room.other_slots.release()

    async def _protected_call(
        self, room: WaitingRoom, metrics: Metrics, scope: Scope, receive: Receive, send: Send
    ) -> None:
        headers = _headers(scope)
        cookies = _cookies(headers.get(b"cookie"))
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        token = authorization[7:].strip() if authorization.startswith("Bearer ") else None
        ticket_text = headers.get(TICKET_HEADER.encode(), b"").decode("latin-1") or cookies.get(
            TICKET_COOKIE
        )
        stamp = scope["path"].startswith("/api/v1/stamps")
        facts = RequestFacts(
            address=self._address(scope, headers),
            token=token or None,
            session=cookies.get(SESSION_COOKIE),
            ticket_text=ticket_text,
            stamp=stamp,
        )
        secure = scope.get("scheme") == "https"
        verdict = await room.decide(facts)
        if verdict.outcome == "rate_limited":
            await _drain(receive)
            await self._refuse(
                scope, send, RateLimited(), verdict, verdict.retry_after_s, secure, room
            )
            return
        if verdict.outcome == "queued":
            await _drain(receive)
            await self._refuse(scope, send, Queued(), verdict, verdict.retry_after_s, secure, room)
            return
        started = time.monotonic()
        if not await room.slots.acquire(self.local_wait_s):
            room.controller.observe_busy(time.time())
            await _drain(receive)
            await self._refuse(scope, send, Busy(), verdict, 1, secure, room)
            return
        room.controller.observe_admitted(time.time())
        ticket = verdict.ticket
        if ticket is not None:
            metrics.admitted.labels(LANES[ticket.lane]).inc()
        extra: list[tuple[bytes, bytes]] = self._ticket_headers(room, verdict, secure)
        gauge = metrics.inflight.labels("protected")
        gauge.inc()

        async def send_with_pass(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_pass)
        finally:
            gauge.dec()
            room.slots.release()
            latency = time.monotonic() - started
            room.controller.observe(latency, stamp=stamp, now=time.time())
            if stamp:
                metrics.stamp_latency.observe(latency)

    def _ticket_headers(
        self, room: WaitingRoom, verdict: Verdict, secure: bool
    ) -> list[tuple[bytes, bytes]]:
        found: list[tuple[bytes, bytes]] = []
        if verdict.ticket is not None:
            text = room.keys.encode(verdict.ticket)
            found.append((TICKET_HEADER.encode(), text.encode()))
            found.append(_cookie(TICKET_COOKIE, text, room.keys.ticket_ttl_s, secure))
        if verdict.new_session is not None:
            found.append(_cookie(SESSION_COOKIE, verdict.new_session, 86_400, secure))
        if verdict.held_ms:
            found.append((b"x-queue-held-ms", str(verdict.held_ms).encode()))
        return found

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        error: EmeteraiError,
        verdict: Verdict | None,
        retry_after_s: int,
        secure: bool,
        room: WaitingRoom,
    ) -> None:
        body: dict[str, Any] = {
            "type": f"https://emeterai.example/problems/{error.code.lower().replace('_', '-')}",
            "title": error.title,
            "status": error.status,
            "detail": error.detail,
            "code": error.code,
            "retry_after_s": retry_after_s,
        }
        headers: list[tuple[bytes, bytes]] = [(b"retry-after", str(retry_after_s).encode())]
        if verdict is not None and verdict.ticket is not None:
            ticket = verdict.ticket
            body.update(lane=LANES[ticket.lane], seq=ticket.seq)
            if error.code == "QUEUED":
                body.update(position=verdict.position, eta_s=round(verdict.eta_s, 1))
        if verdict is not None:
            headers += self._ticket_headers(room, verdict, secure)
            body["ticket"] = room.keys.encode(verdict.ticket) if verdict.ticket else None
        if _wants_page(scope):
            # A browser's form post: to the queue page, which brings the person back to
            # the page they were on when their turn comes (the ticket rides in a cookie).
            location = "/antrean?next=" + quote(_same_origin_referer(scope), safe="")
            headers += [(b"location", location.encode()), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 303, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        encoded = json.dumps(body).encode()
        headers += [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(encoded)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": encoded})


def _wants_page(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    path: str = scope["path"]
    return not path.startswith("/api/") and b"text/html" in headers.get(b"accept", b"")


def _same_origin_referer(scope: Scope) -> str:
    """The path (and query) of the page the form was on, if it is ours; else home."""
    headers: dict[bytes, bytes] = dict(scope["headers"])
    referer = urlsplit(headers.get(b"referer", b"").decode("latin-1"))
    host = headers.get(b"host", b"").decode("latin-1")
    if referer.netloc != host or not referer.path.startswith("/"):
        return "/"
    path: str = referer.path
    return path + (f"?{referer.query}" if referer.query else "")


# --- routes ---------------------------------------------------------------------------


def _room(request: Request) -> WaitingRoom:
    room: WaitingRoom = request.app.state.waiting_room
    return room


def _ticket_of(request: Request, room: WaitingRoom) -> Any:
    text = request.headers.get(TICKET_HEADER) or request.cookies.get(TICKET_COOKIE)
    if not text:
        return None
    try:
        return room.keys.decode(text[:200], now_ms=int(time.time() * 1000))
    except EmeteraiError:
        return None


@router.get("/api/v1/queue", tags=["admission"])
async def queue_position(request: Request) -> JSONResponse:
    """Your place in the line: send the ticket (X-Queue-Ticket header or cookie).

    Answers from memory, never from the database. `ticket_state` is `waiting`, `admitted`
    (repeat your request now), `expired` or `none`."""
    room = _room(request)
    ticket = _ticket_of(request, room)
    key = (
        ticket.binding.hex()
        if ticket is not None
        else (request.client.host if request.client else "unknown")
    )
    wait = room.poll_limiter.take(key, time.time())
    view = room.queue_view(ticket)
    view["admission_enabled"] = request.app.state.admission.enabled
    if wait > 0:
        retry = max(1, int(wait) + 1)
        body = {
            "type": "https://emeterai.example/problems/rate-limited",
            "title": RateLimited.title,
            "status": 429,
            "detail": "poll at most once a second; your place is kept",
            "code": RateLimited.code,
            "retry_after_s": retry,
        }
        return JSONResponse(
            body, status_code=429, media_type=PROBLEM_JSON, headers={"Retry-After": str(retry)}
        )
    return JSONResponse(view, headers={"Cache-Control": "no-store"})


async def cached_status(request: Request) -> dict[str, Any]:
    """The status figures, cached a few seconds per process (the API and the page)."""
    room = _room(request)
    cached = getattr(request.app.state, "status_cache", None)
    now = time.time()
    if cached is not None and now - cached[0] < STATUS_CACHE_S:
        status: dict[str, Any] = cached[1]
        return status
    now_ms = int(now * 1000)
    samples = await asyncio.to_thread(room.store.samples_since, now_ms - 24 * 3600 * 1000)
    status = build_status(
        room.snapshot,
        samples,
        now_ms=now_ms,
        rate_per_s=room.global_rate_per_s(),
        eta_s=room.new_arrival_eta_s(),
        admission_enabled=request.app.state.admission.enabled,
    )
    request.app.state.status_cache = (now, status)
    return status


@router.get("/api/v1/status", tags=["admission"])
async def service_status(request: Request) -> dict[str, Any]:
    """Public: the line now, availability over the last 24 hours, recent incidents."""
    return await cached_status(request)


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    room: WaitingRoom | None = getattr(request.app.state, "waiting_room", None)
    metrics: Metrics = request.app.state.metrics
    body = metrics.exposition(room.snapshot if room is not None else None)
    return Response(content=body, media_type=CONTENT_TYPE)
