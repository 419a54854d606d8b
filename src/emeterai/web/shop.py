"""Buying quota in the issuer's shop: choose, see the price, pay, watch the order.

The routes call the channels use cases (`channels.orders`, `channels.sandbox`) in
process. The order page says at every moment what happened to the money; it updates
itself (live.js polls `/buy/{order}/status.json` at the pace the answer asks for) and,
without JavaScript, reloads itself while the order is not final.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from emeterai.db import transaction
from emeterai.errors import EmeteraiError
from emeterai.web.i18n import N_
from emeterai.web.pages import Page, check_csrf, page_for

router = APIRouter(include_in_schema=False)
log = logging.getLogger("emeterai.web.shop")
BUY_COUNT_MAX = 1000
SANDBOX_DELAY_S = 5
FINAL = frozenset({"credited", "expired", "refunded"})
_BACKGROUND: set[asyncio.Task[None]] = set()

STATUS_TEXT = {
    "awaiting_payment": N_("Awaiting payment"),
    "paid": N_("Paid, being credited"),
    "credited": N_("Credited"),
    "expired": N_("Expired"),
    "refunded": N_("Refunded"),
}
# What the status means for the user's money, in plain words.
STATUS_EXPLAINED = {
    "awaiting_payment": N_(
        "We are waiting for your payment. Nothing has been charged yet. "
        "This page changes by itself as soon as the payment arrives."
    ),
    "paid": N_(
        "Your payment has arrived. The stamps are being added to your balance: "
        "this takes a few seconds."
    ),
    "credited": N_("Done: your payment arrived and the stamps are in your balance."),
    "expired": N_(
        "No payment arrived in time, so this order has expired and nothing was charged. "
        "If you did pay, the payment is still credited when it arrives."
    ),
    "refunded": N_("This order was refunded. Its unused stamps were taken back."),
}
EVENT_TEXT = {
    "created": N_("Order created"),
    "payment_failed": N_("Payment failed: nothing was charged"),
    "paid": N_("Payment received"),
    "credited": N_("Stamps added to your balance"),
    "expired": N_("Order expired: no payment arrived in time"),
    "refunded": N_("Refunded"),
}


def order_context(page: Page, view: Any) -> dict[str, Any]:
    """An order as the templates and the status JSON show it, in the user's language."""
    return {
        "id": view.order_id,
        "count": view.count,
        "unit_price_rupiah": view.unit_price_rupiah,
        "amount_rupiah": view.amount_rupiah,
        "status": view.status,
        "status_text": page.gettext(STATUS_TEXT.get(view.status, view.status)),
        "explained": page.gettext(STATUS_EXPLAINED.get(view.status, "")),
        "final": view.status in FINAL,
        "created_at": view.created_at,
        "expires_at": view.expires_at,
        "credited_at": view.credited_at,
        "timeline": [
            {
                "at": at,
                "kind": kind,
                "text": page.gettext(EVENT_TEXT[kind]) if kind in EVENT_TEXT else kind,
            }
            for at, kind, _detail in view.timeline
        ],
    }


def _prices(page: Page) -> tuple[int, int]:
    from emeterai.channels.management import FACE_VALUE_RUPIAH, shop_channel

    runtime = page.runtime
    with transaction(runtime.sessions) as session:
        shop = shop_channel(session, runtime.settings, now=runtime.clock.now())
        return FACE_VALUE_RUPIAH, shop.fee_rupiah


def _buy_form(page: Page, *, count: int, error: str | None, status_code: int = 200) -> Response:
    face, fee = _prices(page)
    return page.render(
        "buy.html",
        {
            "count": max(1, min(count, BUY_COUNT_MAX)),
            "count_max": BUY_COUNT_MAX,
            "face_rupiah": face,
            "fee_rupiah": fee,
            "unit_rupiah": face + fee,
            "sandbox": page.runtime.settings.payments_sandbox,
            # One key per form shown: a double submit makes one order, not two.
            "request_key": "web-" + secrets.token_urlsafe(18),
            "error": error,
        },
        status_code=status_code,
    )


@router.get("/buy")
async def buy_form(request: Request, count: int = 1) -> Response:
    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    return await run_in_threadpool(lambda: _buy_form(page, count=count, error=None))


@router.post("/buy")
async def buy(
    request: Request,
    count: Annotated[int, Form(ge=1, le=BUY_COUNT_MAX)],
    request_key: Annotated[str, Form(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")],
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    from emeterai.channels.management import shop_channel
    from emeterai.channels.orders import create_order

    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    account_id = page.viewer.account_id
    runtime = page.runtime
    try:
        check_csrf(page, csrf_token)

        def work() -> str:
            with transaction(runtime.sessions) as session:
                now = runtime.clock.now()
                shop = shop_channel(session, runtime.settings, now=now)  # it always can sell
                return create_order(
                    session, shop, account_id, count, now=now, request_key=request_key
                ).id

        order_id = await run_in_threadpool(work)
    except EmeteraiError as error:
        message = page.error_text(error.code)
        status = error.status if error.status < 500 else 500
        return await run_in_threadpool(
            lambda: _buy_form(
                page,
                count=count,
                error=message,
                status_code=status,
            )
        )
    return page.redirect(f"/buy/{order_id}")


def _order(page: Page, order_id: str) -> dict[str, Any]:
    from emeterai.channels.orders import expire_orders, get_order, view_of

    assert page.viewer is not None
    account_id = page.viewer.account_id
    runtime = page.runtime
    with transaction(runtime.sessions) as session:
        order = get_order(session, order_id, account_id=account_id)
        expire_orders(session, now=runtime.clock.now(), account_id=account_id)
        session.refresh(order)
        return order_context(page, view_of(session, order))


def _retry_after_s(order: dict[str, Any]) -> int:
    """How soon a watching page should ask again: quickly while money is moving."""
    if order["final"]:
        return 0
    return 2 if order["status"] == "paid" or order["timeline"][-1]["kind"] != "created" else 3


@router.get("/buy/{order_id}")
async def order_page(request: Request, order_id: str, sandbox: str = "") -> Response:
    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    try:
        order = await run_in_threadpool(_order, page, order_id)
    except EmeteraiError as error:
        return page.render(
            "error.html",
            {"message": page.error_text(error.code), "back": "/dashboard"},
            status_code=404,
        )
    notices = {
        "fail": N_("SANDBOX: the payment was refused. Nothing was charged; you can try again."),
        "delay": N_("SANDBOX: the payment is on its way and confirms in a few seconds."),
    }
    return page.render(
        "order.html",
        {
            "order": order,
            "sandbox": page.runtime.settings.payments_sandbox,
            "notice": page.gettext(notices[sandbox]) if sandbox in notices else None,
            "refresh_s": _retry_after_s(order),
        },
    )


@router.get("/buy/{order_id}/status.json")
async def order_status(request: Request, order_id: str) -> Response:
    """What live.js polls: the status, its words, the timeline, and when to ask again."""
    page = await page_for(request)
    if page.viewer is None:
        return JSONResponse({"code": "UNAUTHENTICATED"}, status_code=401)
    try:
        order = await run_in_threadpool(_order, page, order_id)
    except EmeteraiError as error:
        return JSONResponse({"code": error.code}, status_code=404)
    retry = _retry_after_s(order)
    body = {
        "status": order["status"],
        "status_text": order["status_text"],
        "explained": order["explained"],
        "final": order["final"],
        "retry_after_s": retry,
        "timeline": [
            {"when": page_time(page, entry["at"]), "text": entry["text"]}
            for entry in order["timeline"]
        ],
    }
    headers = {"Cache-Control": "no-store"}
    if retry:
        headers["Retry-After"] = str(retry)
    return JSONResponse(body, headers=headers)


def page_time(page: Page, moment: Any) -> str:
    from emeterai.web.i18n import format_time

    return format_time(moment, page.language)


@router.post("/buy/{order_id}/sandbox")
async def sandbox_pay(
    request: Request,
    order_id: str,
    outcome: Annotated[str, Form(pattern=r"^(confirm|fail|delay)$")],
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """SANDBOX: pay as the shop's payment provider would (only with the sandbox on)."""
    from emeterai.channels.sandbox import deliver, plan_payment

    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    account_id = page.viewer.account_id
    runtime = page.runtime
    try:
        check_csrf(page, csrf_token)

        def plan() -> Any:
            return plan_payment(
                runtime.sessions,
                runtime.settings,
                order_id,
                outcome=outcome,
                duplicates=0,
                delay_s=SANDBOX_DELAY_S if outcome == "delay" else 0,
                now=runtime.clock.now(),
                account_id=account_id,
            )

        planned = await run_in_threadpool(plan)
        if planned.outcome == "confirm":
            await run_in_threadpool(
                deliver, runtime.sessions, runtime.settings, runtime.clock, planned
            )
        elif planned.outcome == "delay":

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
    except EmeteraiError as error:
        return page.render(
            "error.html",
            {"message": page.error_text(error.code), "back": f"/buy/{order_id[:40]}"},
            status_code=error.status if error.status < 500 else 500,
        )
    suffix = "" if outcome == "confirm" else f"?sandbox={outcome}"
    return page.redirect(f"/buy/{order_id}{suffix}")
