"""The drive's tree: stat, list, and the POSIX-shaped changes the mount makes to it."""

import base64
import binascii

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from backend.api.deps import PrincipalDep, ServicesDep, check_path
from backend.api.models import (
    MAX_XATTR_VALUE,
    DeleteIn,
    LinkIn,
    MkdirIn,
    MknodIn,
    MoveIn,
    SetattrIn,
    SymlinkIn,
    XattrIn,
)
from backend.metadata.types import NodeInfo
from backend.protocol.errors import InvalidRequest

router = APIRouter(prefix="/v1/tree", tags=["tree"])


@router.get("/stat")
def stat(who: PrincipalDep, services: ServicesDep, path: str) -> dict:
    return services.metadata.stat(who, check_path(path)).to_json()


@router.get("/list")
def list_dir(who: PrincipalDep, services: ServicesDep, path: str) -> dict:
    path = check_path(path)
    entries = services.metadata.list_dir(who, path)
    return {"path": path, "entries": [node.to_json() for node in entries]}


@router.post("/mkdir", status_code=201)
def mkdir(who: PrincipalDep, services: ServicesDep, body: MkdirIn) -> JSONResponse:
    path = check_path(body.path)
    mode, mtime_ns, parents = body.mode, body.mtime_ns, body.parents
    node, created = services.metadata.mkdir(who, path, mode, mtime_ns, parents, body.posix())
    return JSONResponse(node.to_json(), status_code=201 if created else 200)


@router.post("/symlink", status_code=201)
def symlink(who: PrincipalDep, services: ServicesDep, body: SymlinkIn) -> dict:
    path = check_path(body.path)
    node = services.metadata.symlink(who, path, body.target, body.mtime_ns, body.posix())
    return node.to_json()


@router.post("/mknod", status_code=201)
def mknod(who: PrincipalDep, services: ServicesDep, body: MknodIn) -> dict:
    path = check_path(body.path)
    args = (body.type, body.mode, body.rdev, body.mtime_ns, body.posix())
    return services.metadata.mknod(who, path, *args).to_json()


@router.post("/link", status_code=201)
def link(who: PrincipalDep, services: ServicesDep, body: LinkIn) -> dict:
    src, dst = check_path(body.from_), check_path(body.to)
    return services.metadata.link(who, src, dst, body.posix()).to_json()


@router.post("/move")
def move(who: PrincipalDep, services: ServicesDep, body: MoveIn) -> dict:
    src, dst = check_path(body.from_), check_path(body.to)
    return move_answer(*services.metadata.move(who, src, dst, body.mode, body.posix()))


def move_answer(node: NodeInfo, replaced: NodeInfo | None) -> dict:
    return {"node": node.to_json(), "replaced": replaced.to_json() if replaced else None}


@router.post("/delete")
def delete(who: PrincipalDep, services: ServicesDep, body: DeleteIn) -> dict:
    path = check_path(body.path)
    return {"deleted": services.metadata.delete(who, path, body.recursive, body.posix())}


@router.post("/setattr")
def setattr(who: PrincipalDep, services: ServicesDep, body: SetattrIn) -> dict:
    path = check_path(body.path)
    return services.metadata.setattr(who, path, body.mode, body.mtime_ns, body.posix()).to_json()


@router.post("/xattr")
def xattr(who: PrincipalDep, services: ServicesDep, body: XattrIn) -> dict:
    value = xattr_value(body)
    path = check_path(body.path)
    return services.metadata.set_xattr(who, path, body.name, value, body.posix()).to_json()


def xattr_value(body: XattrIn) -> bytes | None:
    """The decoded value of an xattr request (None removes); its name's length checked."""
    if len(body.name.encode()) > 255:
        raise InvalidRequest("extended attribute names are limited to 255 bytes")
    if body.value is None:
        return None
    try:
        value = base64.b64decode(body.value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("value must be base64") from None
    if len(value) > MAX_XATTR_VALUE:
        raise InvalidRequest(f"extended attribute values are limited to {MAX_XATTR_VALUE} bytes")
    return value
