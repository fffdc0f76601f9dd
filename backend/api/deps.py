"""What every handler depends on: the services, the caller (from the bearer token), valid paths."""

import unicodedata
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend.blocks import BlockService
from backend.config import ServerConfig
from backend.health import HealthCheck
from backend.lifecycle.gc import Collector
from backend.lifecycle.loops import Lifecycle
from backend.metadata.service import MetadataService
from backend.metadata.types import Principal
from backend.notify import LocalNotifier
from backend.protocol import paths
from backend.protocol.errors import InvalidPathError, InvalidRequest, NameTooLong, Unauthorized
from backend.uploads import UploadManager

MAX_DEVICE_LENGTH = 64


@dataclass(frozen=True, slots=True)
class Services:
    config: ServerConfig
    metadata: MetadataService
    blocks: BlockService
    uploads: UploadManager
    notifier: LocalNotifier
    health: HealthCheck
    collector: Collector
    lifecycle: Lifecycle | None = None  # background replication and archiving


def get_services(request: Request) -> Services:
    return request.app.state.services


_bearer = HTTPBearer(auto_error=False, description="An API token from `cirrus admin create-user`")


def _check_device(device: str | None) -> str | None:
    if device is None:
        return None
    if not 1 <= len(device) <= MAX_DEVICE_LENGTH or not device.isprintable():
        raise InvalidRequest(f"X-Cirrus-Device must be 1-{MAX_DEVICE_LENGTH} printable characters")
    return device


async def get_principal(
    services: Annotated[Services, Depends(get_services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    x_cirrus_device: Annotated[str | None, Header()] = None,
) -> Principal:
    """Resolve the caller: from memory on the event loop when the token was seen recently,
    else with a database lookup in the threadpool."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing bearer token")
    device = _check_device(x_cirrus_device)
    token = credentials.credentials
    known = services.metadata.authenticate_cached(token, device)
    if known is not None:
        return known
    return await run_in_threadpool(services.metadata.authenticate, token, device)


def check_path(path: str) -> str:
    """Validate a drive path from a request: 400 invalid_path, or name_too_long for length.

    Names are kept in Unicode NFC (what macOS and Windows clients and web pages produce in
    practice): a name sent in another form (NFD) names the same node as its NFC form."""
    try:
        return paths.normalize(unicodedata.normalize("NFC", path))
    except paths.InvalidPath as exc:
        if _too_long(path):
            raise NameTooLong(f"{exc}: {path[:64]!r}...") from None
        raise InvalidPathError(f"{exc}: {path[:200]!r}") from None


def _too_long(path: str) -> bool:
    encoded = path.encode("utf-8", "surrogatepass")
    return len(encoded) > paths.PATH_MAX or any(
        len(part) > paths.NAME_MAX for part in encoded.split(b"/")
    )


def declared_length(request: Request) -> int:
    """The body size the client announced (Content-Length), -1 when unknown or unreadable.

    Read from the raw headers rather than declared as a parameter: it describes the transfer,
    not the call, and the HTTP server already refuses a body that disagrees with it.
    """
    try:
        return int(request.headers.get("content-length", "-1"))
    except ValueError:
        return -1


ServicesDep = Annotated[Services, Depends(get_services)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
