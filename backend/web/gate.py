"""Where a request goes: page requests to the page's own app, uploads from the page to the API.

The page's requests (`/` and `/web/...`) never reach the API's stack: they are authenticated
by the session cookie, not a bearer token, and read small form bodies of their own. The
page's uploads use the API's resumable protocol as it is: a POST to /v1/files or a PUT to
/v1/uploads/... that carries the session cookie and the session's CSRF token in a header (and
no Authorization) is passed on with the session's token as its bearer token.
"""

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.api.deps import Services
from backend.api.errors import error_response
from backend.protocol.errors import CsrfRefused
from backend.web.pages import create_pages
from backend.web.session import (
    CSRF_HEADER,
    SESSION_COOKIE,
    check_csrf,
    split_cookie,
)

_UPLOADS = ("/v1/files", "/v1/uploads/")


def is_page(path: str) -> bool:
    return path == "/" or path.startswith("/web/")


class WebGate:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.pages = create_pages(services)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_page(scope["path"]):
            await self.pages(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"].startswith(_UPLOADS):
            try:
                scope = _with_session_bearer(scope)
            except CsrfRefused as exc:
                await error_response(exc.status, exc.code, exc.message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _with_session_bearer(scope: Scope) -> Scope:
    """The scope with the session's token as bearer, when an upload comes from the page."""
    request = Request(scope)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is None or "authorization" in request.headers:
        return scope
    _, token = split_cookie(cookie)
    check_csrf(request, token, request.headers.get(CSRF_HEADER))
    headers = [*scope["headers"], (b"authorization", f"Bearer {token}".encode())]
    return {**scope, "headers": headers}
