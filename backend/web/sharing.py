"""The page's sharing: folders shared with other users, shares received, public links
(docs/sharing.md). The server's sharing calls do the work and the refusals; these routes
only read the forms and show the results."""

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from backend.protocol.errors import InvalidRequest
from backend.web.drive import ACCESS, FormDep, node_path, positive_int
from backend.web.pages import (
    Session,
    SessionDep,
    field,
    render,
    see,
    services_of,
    templates,
)

router = APIRouter(prefix="/web")

SHARING_URL = "/web/sharing"
HOUR_S = 3600
EXPIRIES = {  # the lifetimes a link can be given on the page, in seconds
    str(HOUR_S): "1 hour",
    str(24 * HOUR_S): "1 day",
    str(7 * 24 * HOUR_S): "7 days",
    str(30 * 24 * HOUR_S): "30 days",
}
DEFAULT_EXPIRY = str(7 * 24 * HOUR_S)
USER_NAME_MAX = 64

templates.env.globals.update(expiries=EXPIRIES, default_expiry=DEFAULT_EXPIRY)


def _sharing_page(request: Request, session: Session, made: dict | None = None) -> Response:
    metadata = services_of(request).metadata
    shares = metadata.shares(session.who)
    shared = sorted(shares["shared"], key=lambda s: ((s["path"] or "").casefold(), s["user"]))
    return render(
        request,
        "sharing.html",
        session=session,
        shared=shared,
        received=sorted(shares["received"], key=lambda s: (s["path"] or "").casefold()),
        links=metadata.links(session.who),
        access=ACCESS,
        made=made,
    )


@router.get("/sharing")
def sharing(request: Request, session: SessionDep) -> Response:
    return _sharing_page(request, session)


@router.post("/share")
async def share(request: Request, session: SessionDep, form: FormDep) -> Response:
    """Share a folder (named by id) with a user, read-only or read and write."""
    path = await node_path(request, session, form)
    user = field(form, "user").strip()
    if not user or len(user) > USER_NAME_MAX:
        raise InvalidRequest(f"name the user to share with (1 to {USER_NAME_MAX} characters)")
    access = field(form, "access")
    if access not in ACCESS:
        raise InvalidRequest('access is "read" or "write"')
    metadata = services_of(request).metadata
    await run_in_threadpool(metadata.share, session.who, path, user, access)
    return see(SHARING_URL)


@router.post("/unshare")
async def unshare(request: Request, session: SessionDep, form: FormDep) -> Response:
    """Revoke a share (its owner) or leave it (its recipient)."""
    share_id = positive_int(field(form, "id"), "id")
    await run_in_threadpool(services_of(request).metadata.unshare, session.who, share_id)
    return see(SHARING_URL)


@router.post("/link")
async def link(request: Request, session: SessionDep, form: FormDep) -> Response:
    """Make a public link and show its URL, this once: only its hash is kept."""
    path = await node_path(request, session, form)
    expires = form.get("expires", DEFAULT_EXPIRY)
    if expires not in EXPIRIES:
        raise InvalidRequest(f"a link expires after {', '.join(EXPIRIES.values())}")
    metadata = services_of(request).metadata
    made = await run_in_threadpool(metadata.create_link, session.who, path, int(expires))
    url = str(request.base_url).rstrip("/") + f"/v1/public/{made['token']}"
    return await run_in_threadpool(_sharing_page, request, session, {**made, "url": url})


@router.post("/link/revoke")
async def revoke_link(request: Request, session: SessionDep, form: FormDep) -> Response:
    link_id = positive_int(field(form, "id"), "id")
    await run_in_threadpool(services_of(request).metadata.revoke_link, session.who, link_id)
    return see(SHARING_URL)
