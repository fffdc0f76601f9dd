"""The change journal: paging through it, long polling for its next entry, and snapshots.

The long poll is the one `async` handler that waits: it holds no thread while idle (the token
check before it runs in the threadpool like every other call).
"""

from typing import Annotated

from fastapi import APIRouter, Query, Response

from backend.api.deps import PrincipalDep, ServicesDep

router = APIRouter(prefix="/v1", tags=["changes"])

Cursor = Annotated[int, Query(ge=0, le=2**63 - 1)]
PageLimit = Annotated[int, Query(ge=1, le=10_000)]


@router.get("/changes")
def changes(who: PrincipalDep, services: ServicesDep, cursor: Cursor, limit: PageLimit = 1000):
    page = services.metadata.changes(who, cursor, limit)
    return {
        "entries": [{"cursor": c.cursor, "node": c.node.to_json()} for c in page.entries],
        "cursor": page.cursor,
        "has_more": page.has_more,
    }


@router.get("/changes/poll")
async def poll(
    who: PrincipalDep,
    services: ServicesDep,
    cursor: Cursor,
    timeout: Annotated[int, Query(ge=1, le=300)] = 60,
) -> Response:
    latest = await services.notifier.wait(who.namespace_id, cursor, timeout)
    # A ready-made response skips FastAPI's serialisation: one change may wake thousands.
    changed = "true" if latest > cursor else "false"
    body = f'{{"changes":{changed},"cursor":{max(latest, cursor)}}}'
    return Response(body, media_type="application/json")


@router.get("/snapshot")
def snapshot(
    who: PrincipalDep,
    services: ServicesDep,
    after_id: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: PageLimit = 1000,
) -> dict:
    page = services.metadata.snapshot(who, after_id, limit)
    return {
        "cursor": page.cursor,
        "nodes": [node.to_json() for node in page.nodes],
        "has_more": page.has_more,
    }
