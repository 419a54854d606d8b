"""The consoles: the issuer's, and a sales channel's.

Access is by role (`accounts.roles`, granted with `emeterai role grant`): `issuer` opens
`/console/issuer`; `channel` scoped to a channel's id opens that channel's console and no
other. Every change is a CSRF-checked form calling one use case of `channels`, `serials`
or `audit`; secrets (a rotated API key and webhook secret) are shown once, never stored.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from emeterai.db import transaction
from emeterai.errors import EmeteraiError, Forbidden
from emeterai.web.i18n import N_
from emeterai.web.pages import Page, check_csrf, page_for

router = APIRouter(include_in_schema=False)
ORDERS_SHOWN = 20
ROTATION_OVERLAP_S = 24 * 3600
SETTLEMENT_BYTES_MAX = 5 * 1024 * 1024
Csrf = Annotated[str, Form(alias="csrf_token", max_length=200)]

NOTICES = {
    "credit": N_("The credit limit is saved."),
    "revoked": N_("The e-Meterai is revoked: verifying it now answers REVOKED."),
}
FINDING_TEXT = {
    "unknown_reference": N_("No such order for this channel"),
    "wrong_amount": N_("The amount differs"),
    "settled_not_credited": N_("Settled but not credited"),
    "credited_not_settled": N_("Credited but not in the settlement"),
}


def _denied(page: Page) -> Response:
    return page.render(
        "error.html",
        {"message": page.error_text(Forbidden.code), "back": "/dashboard"},
        status_code=403,
    )


# --- the issuer ----------------------------------------------------------------------------


def _period(page: Page, start: str, end: str) -> tuple[str, str]:
    today = page.runtime.clock.now().date()
    return (start or (today - timedelta(days=6)).isoformat()), (end or today.isoformat())


def _issuer_context(page: Page, start: str, end: str, by: str) -> dict[str, Any]:
    from emeterai.channels.management import list_channels, stock_of
    from emeterai.channels.reports import duty_report, parse_period

    runtime = page.runtime
    start, end = _period(page, start, end)
    report = None
    report_error = None
    with transaction(runtime.sessions) as session:
        channels = [stock_of(session, channel) for channel in list_channels(session)[:200]]
        try:
            first, last = parse_period(start, end)
            report = duty_report(session, first, last, by=by)
        except EmeteraiError as error:
            report_error = page.error_text(error.code)
    return {
        "channels": channels,
        "report": report,
        "report_error": report_error,
        "start": start,
        "end": end,
        "by": by,
        "audit": None,
        "error": None,
        "notice": None,
    }


def _is_issuer(page: Page) -> bool:
    return page.viewer is not None and page.viewer.has_role("issuer")


@router.get("/console/issuer")
async def issuer_console(
    request: Request,
    start: Annotated[str, Query(alias="from", max_length=10)] = "",
    end: Annotated[str, Query(alias="to", max_length=10)] = "",
    by: Annotated[str, Query(pattern="^(day|channel)$")] = "day",
    done: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    if not _is_issuer(page):
        return _denied(page)
    context = await run_in_threadpool(_issuer_context, page, start, end, by)
    if done in NOTICES:
        context["notice"] = page.gettext(NOTICES[done])
    return page.render("console_issuer.html", context)


@router.get("/console/issuer/duty.csv")
async def duty_csv(
    request: Request,
    start: Annotated[str, Query(alias="from", max_length=10)] = "",
    end: Annotated[str, Query(alias="to", max_length=10)] = "",
    by: Annotated[str, Query(pattern="^(day|channel)$")] = "day",
) -> Response:
    from emeterai.channels.reports import duty_report, parse_period

    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    if not _is_issuer(page):
        return _denied(page)
    runtime = page.runtime
    start, end = _period(page, start, end)

    def work() -> str:
        first, last = parse_period(start, end)
        with transaction(runtime.sessions) as session:
            return duty_report(session, first, last, by=by).as_csv()

    try:
        text = await run_in_threadpool(work)
    except EmeteraiError as error:
        return page.render(
            "error.html",
            {"message": page.error_text(error.code), "back": "/console/issuer"},
            status_code=400,
        )
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="duty-{start}-{end}-{by}.csv"',
            "Cache-Control": "private, no-store",
        },
    )


async def _issuer_action(page: Page, csrf_token: str, action: Any, done: str) -> Response:
    """Run one issuer change; on success back to the console, else the console with why."""
    if page.viewer is None:
        return page.login_redirect()
    if not _is_issuer(page):
        return _denied(page)
    runtime = page.runtime
    try:
        check_csrf(page, csrf_token)

        def work() -> None:
            with transaction(runtime.sessions) as session:
                action(session, runtime.clock.now())

        await run_in_threadpool(work)
    except EmeteraiError as error:
        context = await run_in_threadpool(_issuer_context, page, "", "", "day")
        context["error"] = page.error_text(error.code)
        return page.render(
            "console_issuer.html", context, status_code=error.status if error.status < 500 else 500
        )
    return page.redirect(f"/console/issuer?done={done}")


@router.post("/console/issuer/credit-limit")
async def credit_limit(
    request: Request,
    channel: Annotated[str, Form(max_length=60)],
    limit: Annotated[int, Form(ge=0, le=100_000_000)],
    csrf_token: Csrf = "",
) -> Response:
    from emeterai.channels.management import set_credit_limit

    page = await page_for(request)
    return await _issuer_action(
        page, csrf_token, lambda session, _now: set_credit_limit(session, channel, limit), "credit"
    )


@router.post("/console/issuer/revoke")
async def revoke(
    request: Request,
    serial: Annotated[str, Form(max_length=60)],
    reason: Annotated[str, Form(max_length=500)],
    csrf_token: Csrf = "",
) -> Response:
    from emeterai.serials import revoke_serial

    page = await page_for(request)
    return await _issuer_action(
        page,
        csrf_token,
        lambda session, now: revoke_serial(session, serial, reason=reason, now=now),
        "revoked",
    )


@router.post("/console/issuer/audit")
async def audit(request: Request, csrf_token: Csrf = "") -> Response:
    """Runs every invariant check (read only) and shows the result on the console."""
    from emeterai.audit import run_audit

    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    if not _is_issuer(page):
        return _denied(page)
    runtime = page.runtime
    try:
        check_csrf(page, csrf_token)
    except EmeteraiError as error:
        return page.render(
            "error.html",
            {"message": page.error_text(error.code), "back": "/console/issuer"},
            status_code=403,
        )

    def work() -> dict[str, Any]:
        context = _issuer_context(page, "", "", "day")
        with transaction(runtime.sessions) as session:
            report = run_audit(session)
        context["audit"] = {
            "ok": report.ok,
            "checked": len(report.checked),
            "findings": report.findings,
            "at": runtime.clock.now(),
        }
        return context

    return page.render("console_issuer.html", await run_in_threadpool(work))


# --- a sales channel -----------------------------------------------------------------------


def _channel_ids(page: Page) -> list[int]:
    if page.viewer is None:
        return []
    return [int(scope) for scope in page.viewer.scopes("channel") if scope.isdigit()]


def _channel_context(page: Page, channel_id: int) -> dict[str, Any]:
    from sqlalchemy import select

    from emeterai.channels.management import stock_of
    from emeterai.channels.models import Channel, ChannelApiKey
    from emeterai.channels.orders import list_orders
    from emeterai.web.shop import order_context

    runtime = page.runtime
    with transaction(runtime.sessions) as session:
        channel = session.get(Channel, channel_id)
        if channel is None:
            raise Forbidden("the channel no longer exists")
        now = runtime.clock.now()
        stock = stock_of(session, channel)
        keys = session.scalars(
            select(ChannelApiKey)
            .where(ChannelApiKey.channel_id == channel_id)
            .where(ChannelApiKey.expires_at.is_(None) | (ChannelApiKey.expires_at > now))
            .order_by(ChannelApiKey.created_at.desc())
            .limit(10)
        ).all()
        views, _more = list_orders(session, now=now, channel_id=channel_id, limit=ORDERS_SHOWN)
        return {
            "channel": {"id": channel.id, "name": channel.name, "kind": channel.kind},
            "stock": stock,
            "keys": [
                {"id": key.id, "created_at": key.created_at, "expires_at": key.expires_at}
                for key in keys
            ],
            "orders": [order_context(page, view) for view in views],
            "rotated": None,
            "settlement": None,
            "error": None,
            "others": _channel_ids(page),
        }


async def _channel_page(page: Page, channel_id: int | None, **extra: Any) -> Response:
    if page.viewer is None:
        return page.login_redirect()
    allowed = _channel_ids(page)
    if not allowed or (channel_id is not None and channel_id not in allowed):
        return _denied(page)
    chosen = channel_id if channel_id is not None else allowed[0]
    try:
        context = await run_in_threadpool(_channel_context, page, chosen)
    except EmeteraiError:
        return _denied(page)
    context.update(extra)
    status = 200 if not extra.get("error") else 400
    return page.render("console_channel.html", context, status_code=status)


@router.get("/console/channel")
async def channel_console(
    request: Request, channel: Annotated[int | None, Query(ge=1)] = None
) -> Response:
    page = await page_for(request)
    return await _channel_page(page, channel)


def _channel_name(page: Page, channel_id: int) -> str:
    from emeterai.channels.models import Channel

    with transaction(page.runtime.sessions) as session:
        channel = session.get(Channel, channel_id)
        if channel is None:
            raise Forbidden("the channel no longer exists")
        return channel.name


@router.post("/console/channel/{channel_id}/rotate")
async def rotate(request: Request, channel_id: int, csrf_token: Csrf = "") -> Response:
    """A new API key and webhook secret, shown once; the old ones work 24 hours more."""
    from emeterai.channels.management import rotate_secrets

    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    if channel_id not in _channel_ids(page):
        return _denied(page)
    runtime = page.runtime
    try:
        check_csrf(page, csrf_token)

        def work() -> Any:
            name = _channel_name(page, channel_id)
            with transaction(runtime.sessions) as session:
                return rotate_secrets(
                    session,
                    runtime.settings,
                    name,
                    now=runtime.clock.now(),
                    overlap_s=ROTATION_OVERLAP_S,
                    api_key=True,
                )

        rotated = await run_in_threadpool(work)
    except EmeteraiError as error:
        return await _channel_page(page, channel_id, error=page.error_text(error.code))
    return await _channel_page(page, channel_id, rotated=rotated)


@router.post("/console/channel/{channel_id}/settlement")
async def settlement(
    request: Request,
    channel_id: int,
    file: Annotated[UploadFile, File()],
    mode: Annotated[str, Form(pattern="^(dry-run|apply)$")] = "dry-run",
    csrf_token: Csrf = "",
) -> Response:
    """Reconcile the payment provider's settlement file: a dry run first, then apply."""
    from emeterai.api.routes import read_upload
    from emeterai.channels.reconciliation import parse_settlement, reconcile

    page = await page_for(request)
    if page.viewer is None:
        return page.login_redirect()
    if channel_id not in _channel_ids(page):
        return _denied(page)
    runtime = page.runtime
    try:
        check_csrf(page, csrf_token)
        data = await read_upload(file, SETTLEMENT_BYTES_MAX)

        def work() -> Any:
            settled = parse_settlement(data)
            name = _channel_name(page, channel_id)
            with transaction(runtime.sessions) as session:
                return reconcile(
                    session, name, settled, apply=mode == "apply", now=runtime.clock.now()
                )

        report = await run_in_threadpool(work)
    except EmeteraiError as error:
        detail = error.detail if error.code == "SETTLEMENT_FILE_INVALID" else ""
        message = page.error_text(error.code)
        return await _channel_page(
            page, channel_id, error=f"{message} {detail}".strip() if detail else message
        )
    findings = [
        {
            "kind": page.gettext(FINDING_TEXT.get(f.kind, f.kind)),
            "payment_reference": f.payment_reference,
            "order_id": f.order_id,
            "amount_rupiah": f.amount_rupiah,
            "expected_rupiah": f.expected_rupiah,
            "repaired": f.repaired,
        }
        for f in report.findings
    ]
    return await _channel_page(
        page,
        channel_id,
        settlement={
            "applied": report.applied,
            "lines": report.lines,
            "matched": report.matched,
            "gaps": report.gaps,
            "findings": findings,
            "filename": (file.filename or "settlement.csv")[:100],
        },
    )
