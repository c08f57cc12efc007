from typing import Annotated

from fastapi import Depends, Path, Request

from service.api.schemas import SESSION_ID_PATTERN
from service.core.repository import ModelRegistry
from service.core.sessions import SessionService

DEFAULT_NAMESPACE = "_"

# The dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in
# its thread pool, a thread hand-off per dependency per request on the hot path.


async def get_sessions(request: Request) -> SessionService:
    service: SessionService = request.app.state.sessions
    return service


async def get_models(request: Request) -> ModelRegistry:
    models: ModelRegistry = request.app.state.sessions.models
    return models


def namespace_of(request: Request) -> str:
    """Sessions are namespaced by the caller's API key (set by the auth middleware)."""
    return getattr(request.state, "namespace", DEFAULT_NAMESPACE)


async def get_namespace(request: Request) -> str:
    return namespace_of(request)


Sessions = Annotated[SessionService, Depends(get_sessions)]
Models = Annotated[ModelRegistry, Depends(get_models)]
Namespace = Annotated[str, Depends(get_namespace)]
SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, examples=["b1d6Jc2Qe1pX4Zr8vY0kLm3N"])]
ModelName = Annotated[str, Path(examples=["seed-lstm"])]
