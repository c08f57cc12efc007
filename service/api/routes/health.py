from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import Sessions
from service.api.schemas import Health, Readiness

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
async def readyz(sessions: Sessions) -> JSONResponse:
    readiness = await sessions.readiness()
    loaded = readiness.models_loaded
    checks = {"redis": readiness.redis, "models": f"{loaded} loaded" if loaded else "none loaded"}
    ready = readiness.ready
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
        headers={} if ready else {"Retry-After": "1"},
    )
