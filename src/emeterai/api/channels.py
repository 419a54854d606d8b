"""Channel and shop routes. Each parses, calls one use case, and maps the result.

- channels, with `Authorization: Bearer <channel API key>`: create and list orders, check
  stock, refund; `POST /api/v1/channels/payments` is the signed payment callback;
- users, with their API token: buy in the issuer's shop and list their own orders.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from emeterai.api.routes import PAGE_SIZE_MAX, AccountId, runtime_of
from emeterai.channels.keys import API_KEY_BYTES_MAX, ChannelKeyVerifier
from emeterai.channels.payments import BODY_BYTES_MAX
from emeterai.db import transaction
from emeterai.errors import Unauthenticated
from emeterai.runtime import Runtime

router = APIRouter(prefix="/api/v1")
log = logging.getLogger("emeterai.sandbox")
_BACKGROUND: set[asyncio.Task[None]] = set()


def _verifier(request: Request) -> ChannelKeyVerifier:
    verifier: ChannelKeyVerifier | None = getattr(request.app.state, "channel_keys", None)
    if verifier is None:
        verifier = ChannelKeyVerifier()
        request.app.state.channel_keys = verifier
    return verifier


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    if not authorization.startswith("Bearer "):
        raise Unauthenticated("send 'Authorization: Bearer <channel API key>'")
    key = authorization.removeprefix("Bearer ").strip()
    if len(key) > API_KEY_BYTES_MAX:
        raise Unauthenticated("the channel API key is malformed")
    return key


async def _channel_of(request: Request, key: str) -> int:
    runtime = runtime_of(request)
    verifier = _verifier(request)

    def work() -> int:
        with transaction(runtime.sessions) as session:
            return verifier.channel_id(session, key, now=runtime.clock.now())

    return await run_in_threadpool(work)


async def channel_id_of(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> int:
    key = _bearer(authorization)
    if key is None:
        raise Unauthenticated("send 'Authorization: Bearer <channel API key>'")
    return await _channel_of(request, key)


ChannelId = Annotated[int, Depends(channel_id_of)]


class ChannelOrderIn(BaseModel):
    email: str = Field(max_length=254)
    count: int = Field(ge=1, le=10_000)


class ShopOrderIn(BaseModel):
    count: int = Field(ge=1, le=10_000)


class SandboxPayIn(BaseModel):
    outcome: str = Field(default="confirm", pattern="^(confirm|fail|delay)$")
    duplicates: int = Field(default=0, ge=0, le=10)
    delay_s: int = Field(default=0, ge=0, le=60)


class OrderCreated(BaseModel):
    order_id: str
    amount_rupiah: int
    status: str
    count: int
    expires_at: str


class TimelineEntry(BaseModel):
    at: str
    event: str
    detail: str


class OrderOut(BaseModel):
    order_id: str
    channel: str
    count: int
    unit_price_rupiah: int
    amount_rupiah: int
    status: str
    refunded_count: int
    created_at: str
    expires_at: str
    credited_at: str | None
    timeline: list[TimelineEntry]


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_before: str | None


class PaymentOut(BaseModel):
    order_id: str
    payment_reference: str
    amount_rupiah: int
    status: str
    count: int
    duplicate: bool
    late: bool


class StockOut(BaseModel):
    channel: str
    kind: str
    stock: int
    credit_limit: int | None
    credit_used: int
    can_sell: int | None


class RefundOut(BaseModel):
    order_id: str
    status: str
    refunded_count: int
    kept_count: int
    refund_rupiah: int
    transfer_fee_rupiah: int
    replayed: bool


def _created(order: Any) -> dict[str, Any]:
    return {
        "order_id": order.id,
        "amount_rupiah": order.amount_rupiah,
        "status": order.status,
        "count": order.count,
        "expires_at": order.expires_at.isoformat(),
    }


# --- channels ------------------------------------------------------------------------------


@router.post("/channels/orders", status_code=201, response_model=OrderCreated)
async def channel_create_order(
    request: Request,
    channel_id: ChannelId,
    body: ChannelOrderIn,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    """An order for a registered user; the price is face value plus the channel's fee."""
    from emeterai.accounts import account_by_email
    from emeterai.channels.management import lock_channel
    from emeterai.channels.orders import create_order

    runtime = runtime_of(request)

    def work() -> dict[str, Any]:
        with transaction(runtime.sessions) as session:
            account = account_by_email(session, body.email)
            channel = lock_channel(session, channel_id)
            order = create_order(
                session,
                channel,
                account.id,
                body.count,
                now=runtime.clock.now(),
                request_key=idempotency_key,
            )
            return _created(order)

    return await run_in_threadpool(work)


@router.get("/channels/orders", response_model=OrderPage)
async def channel_orders(
    request: Request,
    channel_id: ChannelId,
    limit: Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX)] = 50,
    before: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    """The channel's own orders, newest first; page with `before` (an order id)."""
    return await _list(runtime_of(request), channel_id=channel_id, limit=limit, before=before)


@router.get("/channels/orders/{order_id}", response_model=OrderOut)
async def channel_order(request: Request, channel_id: ChannelId, order_id: str) -> dict[str, Any]:
    return await _one(runtime_of(request), order_id, channel_id=channel_id)


@router.get("/channels/me/stock", response_model=StockOut)
async def channel_stock(request: Request, channel_id: ChannelId) -> dict[str, Any]:
    """Stock, credit, and how many stamps the channel can sell now (null: no limit)."""
    from emeterai.channels.management import stock_of
    from emeterai.channels.models import Channel

    runtime = runtime_of(request)

    def work() -> dict[str, Any]:
        with transaction(runtime.sessions) as session:
            channel = session.get(Channel, channel_id)
            if channel is None:
                raise Unauthenticated("the channel no longer exists")
            return stock_of(session, channel).as_dict()

    return await run_in_threadpool(work)


@router.post("/channels/orders/{order_id}/refund", response_model=RefundOut)
async def channel_refund(request: Request, channel_id: ChannelId, order_id: str) -> dict[str, Any]:
    """Refund the unused part of one of the channel's credited orders, less the fee."""
    from emeterai.channels.refunds import refund_order

    runtime = runtime_of(request)

    def work() -> dict[str, Any]:
        with transaction(runtime.sessions) as session:
            return refund_order(
                session, order_id, now=runtime.clock.now(), channel_id=channel_id
            ).as_dict()

    return await run_in_threadpool(work)


@router.post("/channels/payments", response_model=PaymentOut)
async def channel_payment(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    timestamp: Annotated[str | None, Header(alias="X-Emeterai-Timestamp")] = None,
    signature: Annotated[str | None, Header(alias="X-Emeterai-Signature")] = None,
) -> dict[str, Any]:
    """The signed payment callback: credits the order once, however often it arrives.

    Body `{"order_id", "payment_reference", "amount_rupiah"}`; headers
    `X-Emeterai-Timestamp` (unix seconds) and `X-Emeterai-Signature`
    (`sha256=<hex HMAC-SHA256 of the webhook secret over "<timestamp>.<raw body>">`).
    The API key is optional here: the signature identifies the channel."""
    from emeterai.channels.payments import handle_webhook

    runtime = runtime_of(request)
    key = _bearer(authorization)
    channel_id = await _channel_of(request, key) if key is not None else None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_BYTES_MAX:
            break  # refused (and recorded) by the use case as too large

    def work() -> dict[str, Any]:
        return handle_webhook(
            runtime.sessions,
            runtime.settings,
            runtime.clock,
            body=body,
            timestamp_header=timestamp,
            signature_header=signature,
            channel_id=channel_id,
        ).as_dict()

    return await run_in_threadpool(work)


@router.post("/channels/sandbox/orders/{order_id}/pay")
async def channel_sandbox_pay(
    request: Request, channel_id: ChannelId, order_id: str, body: SandboxPayIn
) -> JSONResponse:
    """SANDBOX: pay one of the channel's orders as its payment system would."""
    return await _sandbox(request, order_id, body, channel_id=channel_id)


# --- users: the issuer's shop ----------------------------------------------------------------


@router.post("/me/orders", status_code=201)
async def my_create_order(
    request: Request,
    account_id: AccountId,
    body: ShopOrderIn,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    """Buy stamps in the issuer's shop. With the sandbox on, `payment` says how to pay."""
    from emeterai.channels.management import shop_channel
    from emeterai.channels.orders import create_order

    runtime = runtime_of(request)

    def work() -> dict[str, Any]:
        with transaction(runtime.sessions) as session:
            now = runtime.clock.now()
            shop = shop_channel(session, runtime.settings, now=now)  # it always can sell
            order = create_order(
                session, shop, account_id, body.count, now=now, request_key=idempotency_key
            )
            return _created(order)

    created = await run_in_threadpool(work)
    created["payment"] = (
        {"sandbox": True, "url": f"/api/v1/me/orders/{created['order_id']}/sandbox-pay"}
        if runtime.settings.payments_sandbox
        else None
    )
    return created


@router.get("/me/orders", response_model=OrderPage)
async def my_orders(
    request: Request,
    account_id: AccountId,
    limit: Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX)] = 50,
    before: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    """The caller's own orders, from every channel, newest first, with their timelines."""
    return await _list(runtime_of(request), account_id=account_id, limit=limit, before=before)


@router.get("/me/orders/{order_id}", response_model=OrderOut)
async def my_order(request: Request, account_id: AccountId, order_id: str) -> dict[str, Any]:
    return await _one(runtime_of(request), order_id, account_id=account_id)


@router.post("/me/orders/{order_id}/sandbox-pay")
async def my_sandbox_pay(
    request: Request, account_id: AccountId, order_id: str, body: SandboxPayIn
) -> JSONResponse:
    """SANDBOX: pay, fail or delay the payment of one of the caller's orders."""
    return await _sandbox(request, order_id, body, account_id=account_id)


# --- shared --------------------------------------------------------------------------------


async def _list(
    runtime: Runtime, *, limit: int, before: str | None, **owner: int
) -> dict[str, Any]:
    from emeterai.channels.orders import list_orders

    def work() -> dict[str, Any]:
        with transaction(runtime.sessions) as session:
            views, following = list_orders(
                session, now=runtime.clock.now(), limit=limit, before=before, **owner
            )
        return {"items": [view.as_dict() for view in views], "next_before": following}

    return await run_in_threadpool(work)


async def _one(runtime: Runtime, order_id: str, **owner: int) -> dict[str, Any]:
    from emeterai.channels.orders import expire_orders, get_order, view_of

    def work() -> dict[str, Any]:
        with transaction(runtime.sessions) as session:
            order = get_order(session, order_id, **owner)
            expire_orders(session, now=runtime.clock.now(), **owner)
            session.refresh(order)
            return view_of(session, order).as_dict()

    return await run_in_threadpool(work)


async def _sandbox(
    request: Request, order_id: str, body: SandboxPayIn, **owner: int
) -> JSONResponse:
    from emeterai.channels.sandbox import deliver, plan_payment

    runtime = runtime_of(request)

    def plan() -> Any:
        return plan_payment(
            runtime.sessions,
            runtime.settings,
            order_id,
            outcome=body.outcome,
            duplicates=body.duplicates,
            delay_s=body.delay_s,
            now=runtime.clock.now(),
            **owner,
        )

    planned = await run_in_threadpool(plan)
    if planned.outcome == "fail":
        return JSONResponse({"sandbox": True, "outcome": "fail", "order_id": planned.order_id})
    if planned.outcome == "delay":

        async def later() -> None:
            await asyncio.sleep(planned.delay_s)
            try:
                await run_in_threadpool(
                    deliver, runtime.sessions, runtime.settings, runtime.clock, planned
                )
            except Exception:
                log.exception("SANDBOX delayed confirmation of %s failed", planned.order_id)

        task = asyncio.get_running_loop().create_task(later())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        return JSONResponse(
            {
                "sandbox": True,
                "outcome": "delay",
                "order_id": planned.order_id,
                "confirm_in_s": planned.delay_s,
            },
            status_code=202,
        )
    answers = await run_in_threadpool(
        deliver, runtime.sessions, runtime.settings, runtime.clock, planned
    )
    return JSONResponse(
        {"sandbox": True, "outcome": "confirm", "order_id": planned.order_id, "deliveries": answers}
    )
