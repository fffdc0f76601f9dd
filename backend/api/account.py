"""Liveness for load balancers, and who the caller is."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from backend.api.deps import PrincipalDep, ServicesDep

router = APIRouter(prefix="/v1", tags=["account"])


@router.get("/health", openapi_extra={"security": []})
async def health(services: ServicesDep) -> JSONResponse:
    """No token: 200 while the database and the block store answer, else 503 (backend/health)."""
    report = await services.health.report()
    return JSONResponse(report.to_json(), status_code=200 if report.ok else 503)


@router.get("/account")
def account(who: PrincipalDep, services: ServicesDep) -> dict:
    return services.metadata.account(who)
