"""What every page shares: language, the signed-in account, CSRF, and rendering.

- Language: cookie `emeterai_lang` (`id` by default, `en` by switch).
- Session: cookie `emeterai_auth`, HttpOnly, SameSite=Lax, Secure on https; the
  server keeps only its SHA-256 (`accounts.sessions`).
- CSRF: a double-submit token. Cookie `emeterai_csrf` (HttpOnly, SameSite=Strict) and
  the hidden form field `csrf_token` must match, and a cross-site `Origin` is refused.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from emeterai.db import transaction
from emeterai.errors import CsrfFailed
from emeterai.runtime import Runtime
from emeterai.web import i18n
from emeterai.web.messages import VERDICTS, error_message

LANG_COOKIE = "emeterai_lang"
SESSION_COOKIE = (
    "emeterai_auth"  # not emeterai_session: the waiting room binds tickets with that one
)
CSRF_COOKIE = "emeterai_csrf"
CSRF_FIELD = "csrf_token"
CSRF_LENGTH_MAX = 100


@jinja2.pass_context
def _gettext(context: jinja2.runtime.Context, message: str) -> str:
    translations = context.get("translations") or i18n.catalogue(i18n.DEFAULT_LANGUAGE)
    return str(translations.gettext(message))


@jinja2.pass_context
def _ngettext(context: jinja2.runtime.Context, singular: str, plural: str, count: int) -> str:
    translations = context.get("translations") or i18n.catalogue(i18n.DEFAULT_LANGUAGE)
    return str(translations.ngettext(singular, plural, count))


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
    )
    environment.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=_gettext, ngettext=_ngettext, newstyle=True
    )
    return environment


templates = Jinja2Templates(env=_environment())


@dataclass(frozen=True)
class Viewer:
    account_id: int
    email: str
    roles: tuple[tuple[str, str], ...] = ()

    def has_role(self, role: str) -> bool:
        return any(name == role for name, _scope in self.roles)

    def scopes(self, role: str) -> list[str]:
        return [scope for name, scope in self.roles if name == role]


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def language_of(request: Request) -> str:
    chosen = request.cookies.get(LANG_COOKIE, "")
    return chosen if chosen in i18n.LANGUAGES else i18n.DEFAULT_LANGUAGE


def _load_viewer(runtime: Runtime, secret: str) -> Viewer | None:
    from emeterai.accounts.models import Account
    from emeterai.accounts.roles import roles_of
    from emeterai.accounts.sessions import session_account

    with transaction(runtime.sessions) as session:
        account_id = session_account(session, secret, now=runtime.clock.now())
        if account_id is None:
            return None
        account = session.get(Account, account_id)
        if account is None:
            return None
        roles = tuple((role.role, role.scope) for role in roles_of(session, account_id))
        return Viewer(account_id=account_id, email=account.email, roles=roles)


@dataclass
class Page:
    """One request's view of the site: who, in which language, with which CSRF token."""

    request: Request
    language: str
    viewer: Viewer | None
    csrf_token: str
    new_csrf: bool
    cookies: list[tuple[str, str, int | None]] = field(default_factory=list)

    @property
    def runtime(self) -> Runtime:
        return runtime_of(self.request)

    def gettext(self, message: str) -> str:
        return str(i18n.catalogue(self.language).gettext(message))

    def error_text(self, code: str, **values: Any) -> str:
        text = self.gettext(error_message(code))
        return text.format(**values) if values else text

    def secure(self) -> bool:
        return self.runtime.settings.web_cookie_secure or self.request.url.scheme == "https"

    def render(
        self, template: str, context: dict[str, Any] | None = None, *, status_code: int = 200
    ) -> HTMLResponse:
        values: dict[str, Any] = {
            "translations": i18n.catalogue(self.language),
            "lang": self.language,
            "viewer": self.viewer,
            "csrf_token": self.csrf_token,
            "csrf_field": CSRF_FIELD,
            "path": self.request.url.path,
            "query": self.request.url.query,
            "rupiah": lambda amount: i18n.format_rupiah(amount, self.language),
            "number": lambda value: i18n.format_number(value, self.language),
            "when": lambda moment: i18n.format_time(moment, self.language),
            "error_text": self.error_text,
            "verdicts": VERDICTS,
            "upload_bytes_max": self.runtime.settings.upload_bytes_max,
        }
        values.update(context or {})
        response = templates.TemplateResponse(
            self.request, template, values, status_code=status_code
        )
        response.headers["Cache-Control"] = "no-store"
        self.finish(response)
        return response

    def finish(self, response: Response) -> None:
        if self.new_csrf:
            response.set_cookie(
                CSRF_COOKIE,
                self.csrf_token,
                httponly=True,
                samesite="strict",
                secure=self.secure(),
                path="/",
            )
        for name, value, max_age in self.cookies:
            response.set_cookie(
                name,
                value,
                max_age=max_age,
                httponly=True,
                samesite="lax",
                secure=self.secure(),
                path="/",
            )

    def redirect(self, url: str, *, status_code: int = 303) -> RedirectResponse:
        response = RedirectResponse(url, status_code=status_code)
        self.finish(response)
        return response

    def login_redirect(self) -> RedirectResponse:
        target = self.request.url.path
        if self.request.url.query:
            target += "?" + self.request.url.query
        return self.redirect(f"/login?next={quote(target, safe='')}")


async def page_for(request: Request) -> Page:
    secret = request.cookies.get(SESSION_COOKIE)
    viewer = None
    if secret:
        viewer = await run_in_threadpool(_load_viewer, runtime_of(request), secret)
    csrf = request.cookies.get(CSRF_COOKIE, "")
    new_csrf = not (16 <= len(csrf) <= CSRF_LENGTH_MAX)
    if new_csrf:
        csrf = secrets.token_urlsafe(32)
    return Page(
        request=request,
        language=language_of(request),
        viewer=viewer,
        csrf_token=csrf,
        new_csrf=new_csrf,
    )


def check_csrf(page: Page, submitted: str | None) -> None:
    """Refuse a form that did not come from one of our own pages."""
    origin = page.request.headers.get("origin")
    if origin and origin != "null":
        host = page.request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise CsrfFailed("the form came from another site")
    cookie = page.request.cookies.get(CSRF_COOKIE, "")
    if (
        page.new_csrf
        or not submitted
        or len(submitted) > CSRF_LENGTH_MAX
        or not hmac.compare_digest(cookie.encode(), submitted.encode())
    ):
        raise CsrfFailed()


def safe_next(target: str | None, default: str = "/dashboard") -> str:
    """Only a path on this site: never `//host` or a full URL (open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target[:500]
