"""The page's session: an HttpOnly cookie holding a device token, and CSRF tokens.

Logging in spends a one-time login code (`cirrus admin login-code`) on a device token named
"web", kept in a cookie that is HttpOnly, Secure and SameSite=Strict; logging out revokes the
token. Each state-changing request carries a CSRF token, an HMAC keyed by the session's token,
so it is tied to the session without server-side state, and a foreign Origin is refused.
"""

import hashlib
import hmac
import secrets

from starlette.requests import Request

from backend.protocol.errors import CsrfRefused

SESSION_COOKIE = "cirrus_session"
LOGIN_COOKIE = "cirrus_login"  # the log-in form's CSRF value (before there is a session)
CSRF_HEADER = "x-csrf-token"
SESSION_MAX_AGE_S = 30 * 86400
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def csrf_token(session: str) -> str:
    """The CSRF token of a session: only a page served to this session knows it."""
    return hmac.new(session.encode(), b"cirrus web csrf", hashlib.sha256).hexdigest()


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def check_origin(request: Request) -> None:
    """Refuse a state-changing request sent from another site (when the browser says so)."""
    origin = request.headers.get("origin")
    expected = f"{request.url.scheme}://{request.url.netloc}"
    if origin is not None and origin != expected:
        raise CsrfRefused(f"a request from {origin[:100]!r} is refused on {expected}")


def check_csrf(request: Request, session: str, sent: str | None) -> None:
    check_origin(request)
    if not sent or not hmac.compare_digest(sent, csrf_token(session)):
        raise CsrfRefused("missing or wrong CSRF token; reload the page and try again")


def secure_transport(request: Request) -> bool:
    """True over HTTPS (a TLS proxy in front sets X-Forwarded-Proto), or over plain HTTP
    between a browser and a server on the same machine's loopback, where browsers keep
    Secure cookies: anywhere else the session cookie would never come back."""
    if request.url.scheme == "https":
        return True
    client = request.client.host if request.client else ""
    return request.url.hostname in LOOPBACK_HOSTS and client in LOOPBACK_HOSTS


def cookie_options(name: str, value: str, max_age: int) -> dict:
    """Every cookie of the page: HttpOnly, Secure and SameSite=Strict, for the whole site."""
    return {
        "key": name,
        "value": value,
        "max_age": max_age,
        "path": "/",
        "httponly": True,
        "secure": True,
        "samesite": "strict",
    }


def cookie_value(token_name: str, token: str) -> str:
    """The session cookie keeps the token's name too, so logging out can revoke it."""
    return f"{token_name}.{token}"


def split_cookie(value: str) -> tuple[str, str]:
    """(token name, token) of a session cookie (names made from "web" hold no dot)."""
    name, _, token = value.partition(".")
    return name, token
