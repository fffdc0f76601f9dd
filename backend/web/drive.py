"""The drive's pages: browsing, downloads, new folders, rename, delete, history, the trash."""

import shutil
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from backend.api.deps import check_path
from backend.api.download import file_response
from backend.protocol import paths
from backend.protocol.errors import InvalidPathError, InvalidRequest
from backend.web.pages import Session, SessionDep, field, posted_form, render, see, services_of

router = APIRouter(prefix="/web")

FormDep = Annotated[dict[str, str], Depends(posted_form)]
PathQuery = Annotated[str, Query(max_length=paths.PATH_MAX * 4)]
HISTORY_LIMIT = 100
ACCESS = {"read": "read-only", "write": "read and write"}  # a share's access, as shown


def files_url(path: str) -> str:
    return "/web/files?" + urlencode({"path": path})


def breadcrumbs(path: str) -> list[tuple[str, str]]:
    """(name, path) of each folder from the root down to path."""
    crumbs, current = [("My drive", "/")], ""
    for part in paths.split_path(path):
        current += "/" + part
        crumbs.append((part, current))
    return crumbs


def _usage(request: Request, session: Session) -> dict:
    services = services_of(request)
    used, quota = services.metadata.usage(session.who)
    total = quota if quota is not None else used + shutil.disk_usage(services.config.data_dir).free
    return {"used": used, "quota": quota, "total": max(total, used, 1)}


def _sharing(request: Request, session: Session, path: str) -> dict:
    """What the listing says of shared folders, by path (who I share one with, or who
    shares one with me), and whether its entries can be shared: only owners share, so
    neither a received folder nor anything inside one can."""
    shares = services_of(request).metadata.shares(session.who)
    with_whom: dict[str, list[str]] = {}
    for share in shares["shared"]:
        with_whom.setdefault(share["path"], []).append(
            f"{share['user']} ({ACCESS[share['access']]})"
        )
    notes = {path: "shared with " + ", ".join(users) for path, users in with_whom.items()}
    for share in shares["received"]:
        notes[share["path"]] = f"shared by {share['owner']}, {ACCESS[share['access']]}"
    received = {share["path"] for share in shares["received"]}
    inside = any(path == top or path.startswith(top + "/") for top in received)
    return {"notes": notes, "received": received, "inside_received": inside}


@router.get("/files")
def browse(request: Request, session: SessionDep, path: PathQuery = "/") -> Response:
    path = check_path(path)
    metadata = services_of(request).metadata
    node = metadata.stat(session.who, path)
    if node.type != "dir":
        return see(files_url(paths.parent_and_name(path)[0]))
    children = metadata.list_dir(session.who, path)
    children.sort(key=lambda child: (child.type != "dir", child.name.casefold()))
    return render(
        request,
        "files.html",
        session=session,
        path=path,
        folder_id=node.id,
        crumbs=breadcrumbs(path),
        children=children,
        sharing=_sharing(request, session, path),
        usage=_usage(request, session),
    )


@router.get("/download")
def download(
    request: Request,
    session: SessionDep,
    path: PathQuery,
    rev: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    path = check_path(path)
    blocks = services_of(request).metadata.block_list(session.who, path, None, rev)
    response = file_response(
        services_of(request).blocks,
        blocks,
        request.headers.get("range"),
        request.headers.get("if-none-match"),
    )
    name = paths.parent_and_name(path)[1]
    response.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(name)}"
    return response


@router.get("/history")
def history(request: Request, session: SessionDep, path: PathQuery) -> Response:
    path = check_path(path)
    metadata = services_of(request).metadata
    node = metadata.stat(session.who, path)
    revisions = metadata.history(session.who, path, HISTORY_LIMIT)
    return render(
        request,
        "history.html",
        session=session,
        node=node,
        crumbs=breadcrumbs(path),
        revisions=revisions,
    )


@router.get("/trash")
def trash(request: Request, session: SessionDep) -> Response:
    items = services_of(request).metadata.trash(session.who)
    return render(request, "trash.html", session=session, items=items)


def _child_path(parent: str, name: str) -> str:
    try:
        return paths.join(parent, name)
    except paths.InvalidPath as exc:
        raise InvalidPathError(f"{exc}: {name[:100]!r}") from None


async def node_path(request: Request, session: Session, form: dict[str, str]) -> str:
    """The path of the node a form names by id: ids survive any name (a newline in a
    hidden field may become CRLF on the way; an id cannot)."""
    node_id = positive_int(field(form, "id"), "id")
    metadata = services_of(request).metadata
    return (await run_in_threadpool(metadata.stat_id, session.who, node_id)).path


@router.post("/mkdir")
async def mkdir(request: Request, session: SessionDep, form: FormDep) -> Response:
    parent = await node_path(request, session, form)
    path = _child_path(parent, field(form, "name"))
    metadata = services_of(request).metadata
    await run_in_threadpool(metadata.mkdir, session.who, path, None, None, False)
    return see(files_url(parent))


@router.post("/rename")
async def rename(request: Request, session: SessionDep, form: FormDep) -> Response:
    source = await node_path(request, session, form)
    if source == "/":
        raise InvalidRequest("the root folder cannot be renamed")
    parent = paths.parent_and_name(source)[0]
    target = _child_path(parent, field(form, "name"))
    metadata = services_of(request).metadata
    await run_in_threadpool(metadata.move, session.who, source, target, "noreplace")
    return see(files_url(parent))


@router.post("/delete")
async def delete(request: Request, session: SessionDep, form: FormDep) -> Response:
    """Into the trash, with everything in it (the trash page brings it back)."""
    path = await node_path(request, session, form)
    if path == "/":
        raise InvalidRequest("the root folder cannot be deleted")
    metadata = services_of(request).metadata
    await run_in_threadpool(metadata.delete, session.who, path, True)
    return see(files_url(paths.parent_and_name(path)[0]))


@router.post("/restore")
async def restore(request: Request, session: SessionDep, form: FormDep) -> Response:
    """Make an old revision current again (as a new revision: nothing is lost)."""
    path = await node_path(request, session, form)
    rev = positive_int(field(form, "rev"), "rev")
    await run_in_threadpool(services_of(request).metadata.restore, session.who, path, rev)
    return see("/web/history?" + urlencode({"path": path}))


@router.post("/trash/restore")
async def trash_restore(request: Request, session: SessionDep, form: FormDep) -> Response:
    item = positive_int(field(form, "id"), "id")
    metadata = services_of(request).metadata
    await run_in_threadpool(metadata.restore_from_trash, session.who, item)
    return see("/web/trash")


@router.post("/trash/purge")
async def trash_purge(request: Request, session: SessionDep, form: FormDep) -> Response:
    """One item by id, or everything with all=yes."""
    item = None if form.get("all") == "yes" else positive_int(field(form, "id"), "id")
    await run_in_threadpool(services_of(request).metadata.purge_trash, session.who, item)
    return see("/web/trash")


def positive_int(text: str, name: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 2**63 - 1:
        raise InvalidRequest(f"{name} must be a positive whole number")
    return int(text)
