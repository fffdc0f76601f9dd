"""One place that turns every failure into the API's JSON error shape.

CirrusError subclasses carry their own code and status (backend.protocol.errors). Framework
errors (validation, unknown route, wrong method) are folded into the same shape so a client
never has to parse two formats. A full disk is 507 insufficient_storage (backend/diskfull.py).
Anything else is a bug: logged with its traceback, answered 500.
"""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from backend.db.failover import connection_lost, unavailable
from backend.diskfull import is_disk_full
from backend.protocol.errors import BlockRestoring, CirrusError, InsufficientStorage

log = logging.getLogger(__name__)

_CODES_BY_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    413: "too_large",
    416: "bad_range",
}


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _describe_validation(exc: RequestValidationError) -> str:
    """'query.limit: Input should be less than or equal to 1000; ...' (input values omitted)."""
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _cirrus_error(_: Request, exc: CirrusError) -> JSONResponse:
    if isinstance(exc, BlockRestoring):
        headers = {"Retry-After": str(exc.retry_after)}
        return error_response(exc.status, exc.code, exc.message, headers)
    return error_response(exc.status, exc.code, exc.message)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(400, "invalid_request", _describe_validation(exc))


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _CODES_BY_STATUS.get(exc.status_code, "invalid_request")
    return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))


async def _client_gone(request: Request, _: ClientDisconnect) -> JSONResponse:
    """The client hung up mid-body: nothing was changed and nobody reads the answer."""
    log.info("client disconnected during %s %s", request.method, request.url.path)
    return error_response(400, "invalid_request", "the request body ended early")


async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
    """A dropped or refused database connection (a failover): 503, and the client retries;
    a full disk is 507, anything else a bug."""
    if not connection_lost(exc):
        return await _storage_error(request, exc)
    log.warning("database unreachable during %s %s", request.method, request.url.path)
    refusal = unavailable(exc)
    return error_response(refusal.status, refusal.code, refusal.message, {"Retry-After": "1"})


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    """An OS or database error: 507 when the disk is full, else a bug like any other.
    Registered for these classes (not only `Exception`, whose handler runs after the
    exception has already escaped the app) so that a 507 is an ordinary answer."""
    if is_disk_full(exc):
        log.warning("disk full during %s %s: %s", request.method, request.url.path, exc)
        full = InsufficientStorage("the server is out of storage space; retry later")
        return error_response(full.status, full.code, full.message)
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CirrusError, _cirrus_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(OSError, _storage_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
