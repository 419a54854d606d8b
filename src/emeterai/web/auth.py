"""Register, log in, log out, and reset a forgotten password."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from emeterai.db import transaction
from emeterai.errors import EmeteraiError, InvalidCredentials
from emeterai.web.i18n import N_
from emeterai.web.mail import send_mail
from emeterai.web.pages import SESSION_COOKIE, Page, check_csrf, page_for, safe_next

router = APIRouter(include_in_schema=False)
FIELD_LENGTH_MAX = 1000

Email = Annotated[str, Form(max_length=FIELD_LENGTH_MAX)]
Password = Annotated[str, Form(max_length=FIELD_LENGTH_MAX)]
Csrf = Annotated[str, Form(alias="csrf_token", max_length=200)]
Next = Annotated[str, Form(max_length=FIELD_LENGTH_MAX)]

RESET_SUBJECT = N_("Set a new e-Meterai password")
RESET_BODY = N_(
    "Someone asked to set a new password for the e-Meterai account {email}.\n\n"
    "Open this link within one hour to choose a new password:\n{link}\n\n"
    "If it was not you, ignore this message: your password stays as it is."
)


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _signed_in(page: Page, response: Response, account_id: int) -> None:
    from emeterai.accounts.sessions import open_session

    runtime = page.runtime
    with transaction(runtime.sessions) as session:
        secret = open_session(
            session,
            account_id,
            now=runtime.clock.now(),
            ttl_s=runtime.settings.web_session_ttl_s,
        )
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=runtime.settings.web_session_ttl_s,
        httponly=True,
        samesite="lax",
        secure=page.secure(),
        path="/",
    )


@router.get("/register")
async def register_form(request: Request, next: str = "") -> Response:
    page = await page_for(request)
    if page.viewer:
        return page.redirect("/dashboard")
    return page.render("register.html", {"error": None, "email": "", "next": safe_next(next)})


@router.post("/register")
async def register(
    request: Request,
    email: Email,
    password: Password,
    csrf_token: Csrf = "",
    next: Next = "",
) -> Response:
    from emeterai.accounts.passwords import register_account

    page = await page_for(request)
    runtime = page.runtime
    try:
        check_csrf(page, csrf_token)

        def work() -> int:
            with transaction(runtime.sessions) as session:
                return register_account(session, email, password, now=runtime.clock.now()).id

        account_id = await run_in_threadpool(work)
    except EmeteraiError as error:
        return page.render(
            "register.html",
            {"error": page.error_text(error.code), "email": email[:254], "next": safe_next(next)},
            status_code=error.status if error.status < 500 else 400,
        )
    response = page.redirect(safe_next(next))
    await run_in_threadpool(_signed_in, page, response, account_id)
    return response


@router.get("/login")
async def login_form(request: Request, next: str = "", notice: str = "") -> Response:
    page = await page_for(request)
    if page.viewer:
        return page.redirect(safe_next(next))
    notices = {"reset": N_("Your new password is saved. Log in with it.")}
    return page.render(
        "login.html",
        {
            "error": None,
            "email": "",
            "next": safe_next(next),
            "notice": page.gettext(notices[notice]) if notice in notices else None,
        },
    )


@router.post("/login")
async def login(
    request: Request,
    email: Email,
    password: Password,
    csrf_token: Csrf = "",
    next: Next = "",
) -> Response:
    from emeterai.accounts.passwords import attempt_login

    page = await page_for(request)
    runtime = page.runtime
    try:
        check_csrf(page, csrf_token)

        def work() -> int | None:
            with transaction(runtime.sessions) as session:
                attempt = attempt_login(
                    session, email, password, client=client_of(request), now=runtime.clock.now()
                )
            return attempt.account_id

        account_id = await run_in_threadpool(work)
        if account_id is None:
            raise InvalidCredentials()
    except EmeteraiError as error:
        response = page.render(
            "login.html",
            {
                "error": page.error_text(error.code),
                "email": email[:254],
                "next": safe_next(next),
                "notice": None,
            },
            status_code=error.status if error.status < 500 else 400,
        )
        if "retry_after_s" in error.extra:
            response.headers["Retry-After"] = str(error.extra["retry_after_s"])
        return response
    redirect = page.redirect(safe_next(next))
    await run_in_threadpool(_signed_in, page, redirect, account_id)
    return redirect


@router.post("/logout")
async def logout(request: Request, csrf_token: Csrf = "") -> Response:
    from emeterai.accounts.sessions import end_session

    page = await page_for(request)
    try:
        check_csrf(page, csrf_token)
    except EmeteraiError as error:
        return page.render(
            "error.html", {"message": page.error_text(error.code), "back": "/"}, status_code=403
        )
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        runtime = page.runtime

        def work() -> None:
            with transaction(runtime.sessions) as session:
                end_session(session, secret, now=runtime.clock.now())

        await run_in_threadpool(work)
    response = page.redirect("/")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/password/forgot")
async def forgot_form(request: Request) -> Response:
    page = await page_for(request)
    return page.render("password_forgot.html", {"sent": False, "error": None})


@router.post("/password/forgot")
async def forgot(request: Request, email: Email, csrf_token: Csrf = "") -> Response:
    from emeterai.accounts.passwords import request_password_reset

    page = await page_for(request)
    runtime = page.runtime
    try:
        check_csrf(page, csrf_token)
    except EmeteraiError as error:
        return page.render(
            "password_forgot.html",
            {"sent": False, "error": page.error_text(error.code)},
            status_code=403,
        )

    def work() -> None:
        now = runtime.clock.now()
        with transaction(runtime.sessions) as session:
            issued = request_password_reset(session, email, now=now)
        if issued is None:
            return
        link = (
            f"{runtime.settings.public_url.rstrip('/')}/password/reset?token={quote(issued.token)}"
        )
        send_mail(
            runtime.settings,
            to=issued.email,
            subject=page.gettext(RESET_SUBJECT),
            body=page.gettext(RESET_BODY).format(email=issued.email, link=link),
            now=now,
        )

    await run_in_threadpool(work)
    return page.render("password_forgot.html", {"sent": True, "error": None})


@router.get("/password/reset")
async def reset_form(
    request: Request, token: Annotated[str, Query(max_length=200)] = ""
) -> Response:
    page = await page_for(request)
    return page.render("password_reset.html", {"token": token, "error": None})


@router.post("/password/reset")
async def reset(
    request: Request,
    password: Password,
    token: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Csrf = "",
) -> Response:
    from emeterai.accounts.passwords import reset_password

    page = await page_for(request)
    runtime = page.runtime
    try:
        check_csrf(page, csrf_token)

        def work() -> None:
            with transaction(runtime.sessions) as session:
                reset_password(session, token, password, now=runtime.clock.now())

        await run_in_threadpool(work)
    except EmeteraiError as error:
        return page.render(
            "password_reset.html",
            {"token": token, "error": page.error_text(error.code)},
            status_code=400,
        )
    return page.redirect("/login?notice=reset")
