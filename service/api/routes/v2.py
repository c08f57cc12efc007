"""Open Inference Protocol (KServe V2 / Triton HTTP) with Triton's sequence extension."""

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service import __version__
from service.api.bodies import heavy_work, parts_answer
from service.api.deps import ModelName, Models, Namespace, Sessions
from service.api.errors import render
from service.api.tensor_json import SLICE_VALUES, answer_parts
from service.api.v2_codec import HEADER_LENGTH, TensorSpec, decode_request, decompress
from service.api.v2_codec import encode_response as encode
from service.core.fairness import LARGE_BODY_BYTES
from service.core.models import ServedModel
from service.core.repository import ModelRegistry
from service.core.sequences import SequenceService

log = logging.getLogger(__name__)

EXTENSIONS = ["binary_tensor_data", "sequence"]
INPUT_NAME, OUTPUT_NAME = "inputs", "outputs"


class V2Error(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": V2Error, "description": "Bad input, or a sequence never started or expired"},
    404: {"model": V2Error, "description": "No such model or version"},
    503: {"model": V2Error, "description": "The session store is unreachable"},
}
INFER_EXAMPLE = {
    "id": "42",
    "parameters": {"sequence_id": 7, "sequence_start": True},
    "inputs": [{"name": "inputs", "datatype": "FP32", "shape": [1, 2, 2], "data": [0, 0, 0, 1]}],
}
INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": "JSON; or a JSON header of `Inference-Header-Content-Length` bytes "
        "followed by binary tensor data. Any or no Content-Type.",
        "content": {
            "application/json": {"schema": {"type": "object"}, "example": INFER_EXAMPLE},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])


async def get_sequences(request: Request) -> SequenceService:
    sequences: SequenceService = request.app.state.sequences
    return sequences


Sequences = Annotated[SequenceService, Depends(get_sequences)]


def input_spec(model: ServedModel) -> TensorSpec:
    features = model.runner.input_features
    return TensorSpec(INPUT_NAME, [-1, -1, features], "[batch, timesteps, features]")


def output_spec(model: ServedModel) -> TensorSpec:
    units = model.runner.output_features
    if model.runner.per_step:
        return TensorSpec(OUTPUT_NAME, [-1, -1, units], "[batch, timesteps, units]")
    return TensorSpec(OUTPUT_NAME, [-1, units], "[batch, units]")


def metadata(model: ServedModel, models: ModelRegistry) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [str(version.number) for version in models.versions(model.name)],
        "platform": "keras",
        "inputs": [input_spec(model).metadata()],
        "outputs": [output_spec(model).metadata()],
    }


@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": "lstm-stream", "version": __version__, "extensions": EXTENSIONS}


@router.get("/health/live", summary="Liveness")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Readiness: Redis answers, models loaded", responses=ERRORS)
async def ready(sessions: Sessions) -> Response:
    readiness = await sessions.readiness()
    if readiness.redis != "ok":
        return JSONResponse({"error": f"not ready: {readiness.redis}"}, 503, {"Retry-After": "1"})
    if not readiness.ready:
        return JSONResponse({"error": "not ready: no model is loaded"}, 503, {"Retry-After": "1"})
    return JSONResponse({"ready": True})


@router.get("/models/{model}", summary="Model metadata", responses=ERRORS)
async def model_metadata(model: ModelName, models: Models) -> dict[str, Any]:
    return metadata(models.get(model), models)


@router.get("/models/{model}/versions/{version}", summary="Model metadata", responses=ERRORS)
async def model_version_metadata(model: ModelName, version: str, models: Models) -> dict[str, Any]:
    return metadata(models.get(model, version), models)


@router.get("/models/{model}/ready", summary="Model readiness", responses=ERRORS)
async def model_ready(model: ModelName, models: Models) -> dict[str, Any]:
    return {"name": models.get(model).name, "ready": True}


@router.get("/models/{model}/versions/{version}/ready", summary="Model readiness", responses=ERRORS)
async def model_version_ready(model: ModelName, version: str, models: Models) -> dict[str, Any]:
    return {"name": models.get(model, version).name, "ready": True}


async def infer(
    request: Request, model: ServedModel, sequences: SequenceService, namespace: str
) -> Response:
    max_bytes = request.app.state.settings.max_body_bytes
    body = await request.body()
    heavy = heavy_work(request)
    read = (body, request.headers.get("content-encoding"), max_bytes)
    # zlib lets go of the interpreter lock: a large body inflates beside the event loop.
    body = (
        await heavy.call(decompress, *read) if len(body) > LARGE_BODY_BYTES else decompress(*read)
    )
    spec = output_spec(model)
    call = decode_request(body, request.headers.get(HEADER_LENGTH), input_spec(model), spec)
    header: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if call.id is not None:
        header["id"] = call.id
    inference = await sequences.run(namespace, model, call)
    if inference.chunk is not None:
        header["parameters"] = {
            "sequence_offset": inference.chunk.offset,
            "sequence_steps": inference.chunk.record.steps,
            "sequence_replayed": inference.chunk.replayed,
        }
    outputs = inference.outputs
    if call.binary_output:
        # Copying megabytes of answer holds the interpreter lock: beside the loop if large.
        answer = (header, spec, outputs, True)
        large = outputs.size > SLICE_VALUES
        content, headers = await heavy.call(encode, *answer) if large else encode(*answer)
        media_type = "application/octet-stream" if headers else "application/json"
        return Response(content, media_type=media_type, headers=headers)
    parts = await answer_parts(
        heavy, outputs.ravel(), lambda data: encode(header, spec, outputs, False, data)[0]
    )
    return parts_answer(parts, "application/json")


@router.post(
    "/models/{model}/infer", summary="Inference", responses=ERRORS, openapi_extra=INFER_BODY
)
async def model_infer(
    request: Request, model: ModelName, models: Models, sequences: Sequences, namespace: Namespace
) -> Response:
    return await infer(request, models.get(model), sequences, namespace)


@router.post(
    "/models/{model}/versions/{version}/infer",
    summary="Inference on a given version",
    responses=ERRORS,
    openapi_extra=INFER_BODY,
)
async def model_version_infer(
    request: Request,
    model: ModelName,
    version: str,
    models: Models,
    sequences: Sequences,
    namespace: Namespace,
) -> Response:
    return await infer(request, models.get(model, version), sequences, namespace)


@router.api_route(
    "/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False
)
async def unknown(request: Request, path: str) -> Response:
    message = f"no route {request.method} /v2/{path} in this server's V2 API"
    return render(request, 404, "not_found", message)
