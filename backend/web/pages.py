"""The page's own app: templates, security headers, sessions, log-in and log-out."""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import parse_qsl

import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from backend.api.deps import Services
from backend.db.failover import connection_lost
from backend.metadata.types import Principal
from backend.protocol.errors import (
    CirrusError,
    CsrfRefused,
    InvalidRequest,
    PayloadTooLarge,
    Unauthorized,
)
from backend.web.session import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    check_csrf,
    check_origin,
    cookie_options,
    cookie_value,
    csrf_token,
    new_login_nonce,
    secure_transport,
    split_cookie,
)

log = logging.getLogger(__name__)

MAX_FORM_BYTES = 64 * 1024
LOGIN_NONCE_MAX_AGE_S = 3600
WEB_DEVICE = "web"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.PackageLoader("backend.web", "templates"),
        autoescape=True,  # every file name is escaped wherever it is shown
        undefined=jinja2.StrictUndefined,
    )
)


def human_bytes(size: int) -> str:
    """1536 -> "1.5 KiB": sizes as a person reads them."""
    if size < 1024:
        return f"{size} bytes"
    value, units = size / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{value:.1f} {units[0]}"


def when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters.update(bytes=human_bytes, when=when)


class LoginNeeded(Exception):
    """No valid session: the browser is sent to the log-in page."""


@dataclass(frozen=True, slots=True)
class Session:
    token_name: str
    token: str
    who: Principal

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)


def services_of(request: Request) -> Services:
    return request.app.state.services


def current_session(request: Request) -> Session:
    """The session of the cookie (a thread-pool dependency: it may query the database)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise LoginNeeded
    name, token = split_cookie(cookie)
    metadata = services_of(request).metadata
    try:
        who = metadata.authenticate_cached(token, None) or metadata.authenticate(token, None)
    except Unauthorized:  # unknown or revoked: log in again (other failures show as such)
        raise LoginNeeded from None
    return Session(name, token, who)


SessionDep = Annotated[Session, Depends(current_session)]


async def read_form(request: Request) -> dict[str, str]:
    """A small url-encoded form body (at most MAX_FORM_BYTES), strictly UTF-8."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge(f"a form may be at most {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the form is not valid url-encoded UTF-8") from None
    return dict(pairs)


async def posted_form(request: Request, session: SessionDep) -> dict[str, str]:
    """The form of a state-changing request, once its CSRF token is checked."""
    form = await read_form(request)
    check_csrf(request, session.token, form.get("csrf"))
    return form


def field(form: dict[str, str], name: str) -> str:
    value = form.get(name)
    if value is None:
        raise InvalidRequest(f"the form has no field {name!r}")
    return value


def render(request: Request, name: str, status: int = 200, **context) -> Response:
    session = context.setdefault("session", None)
    context.setdefault("csrf", session.csrf if session else "")
    return templates.TemplateResponse(request, name, context, status_code=status)


def see(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def create_pages(services: Services) -> FastAPI:
    from backend.web import drive, sharing

    pages = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    pages.state.services = services
    pages.mount("/web/static", StaticFiles(packages=[("backend.web", "static")]), name="static")
    pages.include_router(drive.router)
    pages.include_router(sharing.router)
    pages.add_api_route("/", lambda: see("/web/files"), methods=["GET"])
    pages.add_api_route("/web/login", login_page, methods=["GET"])
    pages.add_api_route("/web/login", login, methods=["POST"])
    pages.add_api_route("/web/logout", logout, methods=["POST"])
    _install_handlers(pages)
    return pages


def _install_handlers(pages: FastAPI) -> None:
    @pages.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @pages.exception_handler(LoginNeeded)
    async def to_login(request: Request, exc: LoginNeeded) -> Response:
        return see("/web/login")

    @pages.exception_handler(CirrusError)
    async def cirrus_error(request: Request, exc: CirrusError) -> Response:
        return _error_page(request, exc.status, exc.message)

    @pages.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        return _error_page(request, 400, "the request's parameters are missing or invalid")

    @pages.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error_page(request, exc.status_code, str(exc.detail))

    @pages.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        """A database failover is 503 (try again); anything else a logged server bug."""
        if isinstance(exc, DBAPIError) and connection_lost(exc):
            return _error_page(request, 503, "the drive is briefly unavailable; try again")
        log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error_page(request, 500, "internal server error")


def _error_page(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", status, message=message, session=None)


def login_page(request: Request) -> Response:
    if not secure_transport(request):
        return render(request, "login.html", 400, insecure=True, nonce="", error="")
    nonce = new_login_nonce()
    response = render(request, "login.html", insecure=False, nonce=nonce, error="")
    response.set_cookie(**cookie_options(LOGIN_COOKIE, nonce, LOGIN_NONCE_MAX_AGE_S))
    return response


async def login(request: Request) -> Response:
    """Spend a one-time login code on the session's own device token."""
    if not secure_transport(request):
        return render(request, "login.html", 400, insecure=True, nonce="", error="")
    check_origin(request)
    form = await read_form(request)
    nonce = request.cookies.get(LOGIN_COOKIE)
    if not nonce or form.get("csrf") != nonce:
        raise CsrfRefused("the log-in form has expired; reload the page and try again")
    metadata = services_of(request).metadata
    try:
        new = await run_in_threadpool(metadata.login, field(form, "code").strip(), WEB_DEVICE)
    except CirrusError as exc:
        return render(
            request, "login.html", exc.status, insecure=False, nonce=nonce, error=exc.message
        )
    response = see("/web/files")
    value = cookie_value(new.name, new.token)
    response.set_cookie(**cookie_options(SESSION_COOKIE, value, SESSION_MAX_AGE_S))
    response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


async def logout(request: Request, session: SessionDep) -> Response:
    """Revoke the session's token: a stolen copy of the cookie stops working too."""
    await posted_form(request, session)
    metadata = services_of(request).metadata
    await run_in_threadpool(metadata.revoke_token, session.who.user_name, session.token_name)
    response = see("/web/login")
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response
