"""What a request must show before its body costs the server anything: a URL that is
text, a valid token, and a body within its route's limit.

Starlette decodes a percent-encoded URL leniently (invalid UTF-8 becomes U+FFFD), which made
`path=/c%ff` and `path=/c%fe` the same file. Here the raw URL is decoded strictly first:
invalid UTF-8 in the URL's path or in a `path` query parameter is 400 `invalid_path`, in any
other query parameter 400 `invalid_request`.

FastAPI reads (and parses) a JSON body before it resolves the dependencies that
authenticate the caller, so without this middleware a client with no token could make the
server hold a 100 MB body in memory only to be told 401. Here the bearer token is checked
from the headers first; a request with a body and no valid token is answered 401 with
`Connection: close` and its body is never read. Then every read of the body is counted
against the matched route's limit (backend/api/bodies.py): past it, 413 `too_large`.
The few routes whose body is itself the credential (ANONYMOUS_BODY_PATHS: a login with a
one-time code) skip the token and may send at most ANONYMOUS_BODY_MAX bytes.
A caller with a valid token may have `requests_per_user` requests in progress at once
(429 too_many_requests beyond), so one user cannot take every worker thread.
"""

from collections import Counter
from urllib.parse import unquote_to_bytes

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api.bodies import route_limit
from backend.api.errors import error_response
from backend.metadata.service import MetadataService
from backend.metadata.types import Principal
from backend.protocol.errors import (
    CirrusError,
    InvalidPathError,
    InvalidRequest,
    TooManyRequests,
    Unauthorized,
)

_CLOSE = {"Connection": "close"}
ANONYMOUS_BODY_PATHS = frozenset({"/v1/login"})
ANONYMOUS_BODY_MAX = 4096
_UNCOUNTED = frozenset({"/v1/changes/poll", "/v1/health"})


def bearer_token(headers: Headers) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, None when there is none."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def declared_length(headers: Headers) -> int | None:
    """The Content-Length announced, None when there is none (or it is unreadable)."""
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None


def has_body(headers: Headers) -> bool:
    """True when the request announces a body (a length above zero, or chunks)."""
    return "transfer-encoding" in headers or (declared_length(headers) or 0) > 0


class BodyTooLarge(HTTPException):
    """Raised from receive(): an HTTPException, so FastAPI's body reading lets it through
    (it turns other errors into 400) and the error handler answers 413 too_large."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"this request's body may be at most {limit} bytes", _CLOSE)


class RequestGuard:
    """Authenticate a request that carries a body before reading it; keep it to its limit;
    hold each user to `requests_per_user` requests in progress (long polls aside: they wait
    for news, not for the server)."""

    def __init__(self, app: ASGIApp, metadata: MetadataService, requests_per_user: int) -> None:
        self.app = app
        self.metadata = metadata
        self.requests_per_user = requests_per_user
        self._in_progress: Counter[int] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        anonymous = scope.get("path") in ANONYMOUS_BODY_PATHS
        counted = None
        try:
            check_url(scope)
            who = await self._caller(headers, anonymous)
            if who is not None and scope["path"] not in _UNCOUNTED:
                self._count_in(who.user_id)
                counted = who.user_id
        except CirrusError as exc:
            extra = {"Retry-After": "1"} if isinstance(exc, TooManyRequests) else {}
            if has_body(headers):  # its body is not read: the connection cannot be reused
                extra.update(_CLOSE)
            refusal = error_response(exc.status, exc.code, exc.message, extra)
            await refusal(scope, receive, send)
            return
        if has_body(headers):
            ceiling = ANONYMOUS_BODY_MAX if anonymous else None
            receive = _limited(scope, receive, declared_length(headers), ceiling)
        if counted is None:
            await self.app(scope, receive, send)
        else:
            await self._run_counted(counted, scope, receive, send)

    async def _run_counted(self, user_id: int, scope: Scope, receive: Receive, send: Send) -> None:
        """Run a request that counts against its user; it is out of the count before its
        answer's last bytes leave, so a client that sends its next request as soon as it
        has this answer never finds the previous one still in progress."""
        done = False

        def count_out() -> None:
            nonlocal done
            if not done:
                done = True
                self._count_out(user_id)

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                count_out()
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            count_out()

    async def _caller(self, headers: Headers, anonymous: bool) -> Principal | None:
        """Who sends the request: required when it has a body (but on the anonymous
        routes); otherwise None when there is no valid token (the route then answers as it
        does for anyone)."""
        token = bearer_token(headers)
        try:
            return await self.authenticate(token)
        except Unauthorized:
            if has_body(headers) and not anonymous:
                raise
            return None

    async def authenticate(self, token: str | None) -> Principal:
        if token is None:
            raise Unauthorized("missing bearer token")
        known = self.metadata.authenticate_cached(token, None)
        if known is not None:
            return known
        return await run_in_threadpool(self.metadata.authenticate, token, None)

    def _count_in(self, user_id: int) -> None:
        if self._in_progress[user_id] >= self.requests_per_user:
            raise TooManyRequests(
                f"at most {self.requests_per_user} requests of a user may be in progress"
            )
        self._in_progress[user_id] += 1

    def _count_out(self, user_id: int) -> None:
        self._in_progress[user_id] -= 1
        if not self._in_progress[user_id]:
            del self._in_progress[user_id]


def check_url(scope: Scope) -> None:
    """Refuse a URL whose path or query parameters are not UTF-8 once percent-decoded."""
    if not _is_text(scope.get("raw_path") or b""):
        raise InvalidPathError("the URL's path is not valid UTF-8")
    for pair in scope.get("query_string", b"").split(b"&"):
        name, _, value = pair.partition(b"=")
        if not _is_text(name.replace(b"+", b" ")):
            raise InvalidRequest("a query parameter's name is not valid UTF-8")
        if not _is_text(value.replace(b"+", b" ")):
            refusal = InvalidPathError if name == b"path" else InvalidRequest
            raise refusal(f"query parameter {name.decode('ascii', 'replace')!r} is not valid UTF-8")


def _is_text(encoded: bytes) -> bool:
    try:
        unquote_to_bytes(encoded).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _limited(scope: Scope, receive: Receive, declared: int | None, ceiling: int | None) -> Receive:
    """receive() that raises BodyTooLarge once the body is known to exceed its route's
    limit (or the ceiling, when lower): at the first read for a declared length, else when
    the count passes it."""
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        limit = route_limit(scope.get("route"))  # routing is done before the first read
        if ceiling is not None:
            limit = min(limit, ceiling)
        if declared is not None and declared > limit:
            raise BodyTooLarge(limit)
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_within_limit
