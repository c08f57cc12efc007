from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api.deps import Sessions
from service.api.schemas import Health, Readiness
from service.errors import StoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: Redis answers and models are loaded",
    responses={503: {"model": Readiness, "description": "Redis unreachable or no model loaded"}},
)
async def readyz(request: Request, sessions: Sessions) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        await sessions.store.ping()
        checks["redis"] = "ok"
    except StoreUnavailable as exc:
        checks["redis"] = exc.message
    models = sessions.models.all()
    checks["models"] = f"{len(models)} loaded" if models else "none loaded"
    ready = checks["redis"] == "ok" and bool(models)
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
        headers={} if ready else {"Retry-After": "1"},
    )
