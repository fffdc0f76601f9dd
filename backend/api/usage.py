"""What a user's drive uses against their quota, for `df` on a mount (docs/api.md, Quotas)."""

import shutil

from fastapi import APIRouter

from backend.api.deps import PrincipalDep, ServicesDep

router = APIRouter(prefix="/v1", tags=["account"])


@router.get("/usage")
def usage(who: PrincipalDep, services: ServicesDep) -> dict:
    """Bytes used and the quota; without a quota, what is free is the server's free disk
    space under its data directory (what the drive could still grow by at most)."""
    used, quota = services.metadata.usage(who)
    if quota is None:
        free = shutil.disk_usage(services.config.data_dir).free
    else:
        free = max(quota - used, 0)
    return {"used": used, "quota": quota, "free": free, "total": max(quota or 0, used + free)}
