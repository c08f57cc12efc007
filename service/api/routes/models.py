import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.responses import JSONResponse

from service import errors
from service.api import present
from service.api.bodies import (
    binary_answer,
    binary_response,
    encoded,
    heavy_work,
    parts_answer,
    read_sequence,
    request_body,
    wants_binary,
)
from service.api.deps import ModelName, Models, Namespace, Sessions
from service.api.errors import responses
from service.api.schemas import (
    CreateSessionRequest,
    ModelInfo,
    ModelList,
    PredictResponse,
    SessionInfo,
)
from service.api.tensor_json import EncodedRows, answer_parts
from service.core.fairness import THREAD_OFFLOAD_STEPS

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList, summary="List served models")
async def list_models(models: Models) -> JSONResponse:
    return JSONResponse(
        {
            "models": [present.model_info(m, models) for m in models.all()],
            "refused": [present.refused_model(r) for r in models.refused],
        }
    )


@router.get(
    "/{model}",
    response_model=ModelInfo,
    responses=responses(errors.ModelNotFound),
    summary="Describe one model",
)
async def get_model(model: ModelName, models: Models) -> JSONResponse:
    return JSONResponse(present.model_info(models.get(model), models))


@router.post(
    "/{model}/reload",
    response_model=ModelInfo,
    responses=responses(errors.ModelNotFound, errors.Unauthorized, errors.Forbidden),
    summary="Load new versions of a model and unload removed ones",
    description="Each new file is probe-checked before it serves; a file that fails is listed "
    "in `refused_versions` and the versions served stay. Admin-only when API keys are set.",
)
async def reload_model(model: ModelName, models: Models) -> JSONResponse:
    await asyncio.to_thread(models.refresh, model)
    return JSONResponse(present.model_info(models.get(model), models))


@router.post(
    "/{model}/predict",
    response_model=PredictResponse,
    responses={
        200: binary_response({"model-version": "The served model version."}),
        **responses(errors.ModelNotFound, errors.InvalidInput, errors.PayloadTooLarge),
    },
    summary="Run a whole sequence, statelessly",
    description=(
        "The reference every chunked session stream matches bit for bit. The sequence may "
        "also be sent as `application/octet-stream` (little-endian float32, T x F "
        "row-major); `Accept: application/octet-stream` answers the outputs in that form. "
        "On the latest version, or on `?version=n` for sessions pinned to another."
    ),
    openapi_extra=request_body("PredictRequest"),
)
async def predict(
    model: ModelName,
    request: Request,
    sessions: Sessions,
    namespace: Namespace,
    version: Annotated[
        int | None, Query(gt=0, description="Version number; omitted: latest")
    ] = None,
) -> Response:
    served = sessions.model(model, version)
    x = await read_sequence(request)
    binary = wants_binary(request)
    rows = None if binary or len(x) <= THREAD_OFFLOAD_STEPS else EncodedRows()
    outputs = await sessions.predict_stateless(namespace, served, x, rows)
    if binary:
        return binary_answer(outputs, {"model-version": served.version})
    header = {"model": served.name, "model_version": served.version}
    parts = await answer_parts(
        heavy_work(request), outputs, lambda values: encoded({**header, "outputs": values}), rows
    )
    return parts_answer(parts)


@router.post(
    "/{model}/sessions",
    status_code=201,
    response_model=SessionInfo,
    responses=responses(
        errors.ModelNotFound,
        errors.SessionExists,
        errors.InvalidInput,
        errors.PayloadTooLarge,
        errors.TooManySessions,
    ),
    summary="Start a session at step 0",
)
async def create_session(
    model: ModelName,
    sessions: Sessions,
    namespace: Namespace,
    body: Annotated[
        CreateSessionRequest | None,
        Body(
            openapi_examples={
                "server id": {"summary": "Server-generated id, default TTL", "value": {}},
                "own id": {
                    "summary": "Client-chosen id and a 1-hour TTL",
                    "value": {"session_id": "pump-7", "ttl_seconds": 3600},
                },
                "pinned version": {
                    "summary": "Pinned to version 2 of the model",
                    "value": {"version": 2},
                },
            }
        ),
    ] = None,
) -> JSONResponse:
    body = body or CreateSessionRequest()
    session_id, record = await sessions.create(
        namespace, model, body.session_id, body.ttl_seconds, body.version
    )
    return JSONResponse(present.session_info(session_id, record), status_code=201)
