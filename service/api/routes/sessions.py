from functools import partial
from typing import Annotated

import msgspec
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
    read_chunk,
    request_body,
    wants_binary,
)
from service.api.deps import Namespace, SessionId, Sessions, namespace_of
from service.api.errors import responses
from service.api.schemas import ChunkResponse, ResetRequest, SessionInfo
from service.api.tensor_json import EncodedRows, answer_parts
from service.core.fairness import THREAD_OFFLOAD_STEPS
from service.core.sessions import ChunkResult, SessionService

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


@router.get(
    "/{session_id}",
    response_model=SessionInfo,
    responses=responses(errors.SessionNotFound),
    summary="Describe a session",
)
async def get_session(
    session_id: SessionId, sessions: Sessions, namespace: Namespace
) -> JSONResponse:
    return JSONResponse(present.session_info(session_id, await sessions.get(namespace, session_id)))


_CHUNK_HEADERS = {
    "offset": "Index of the chunk's first timestep.",
    "steps": "The session's step count after the chunk.",
    "replayed": "`true` when this is the stored answer to a repeated chunk.",
}


@router.post(
    "/{session_id}/predict",
    response_model=ChunkResponse,
    responses={
        200: binary_response(_CHUNK_HEADERS),
        **responses(
            errors.SessionNotFound,
            errors.OffsetConflict,
            errors.ModelVersionMismatch,
            errors.InvalidInput,
            errors.PayloadTooLarge,
        ),
    },
    summary="Stream the next chunk",
    description=(
        "Applies the chunk at the session's current step and returns its outputs. With "
        "`offset`, a retry of the last chunk returns the stored answer (`replayed: true`) "
        "and any other offset is 409 `offset_conflict`. The chunk may also be sent as "
        "`application/octet-stream` (little-endian float32, T x F row-major, the offset as "
        "`?offset=n`); `Accept: application/octet-stream` answers the outputs in that form "
        "with `offset`, `steps` and `replayed` headers."
    ),
    openapi_extra=request_body("ChunkRequest"),
)
async def predict_chunk(
    session_id: SessionId,
    request: Request,
    offset: Annotated[
        int | None,
        Query(ge=0, description="The offset, for a body without one (binary)."),
    ] = None,
) -> Response:
    return await answer_chunk(request, session_id, offset)


async def answer_chunk(request: Request, session_id: str, offset: int | None) -> Response:
    """The chunk route's work, also called straight by `ChunkFastPath` for well-formed
    requests. It reads the service and namespace off the request itself: FastAPI's
    dependency solving for them costs ~40 us, a few percent of a 1-step chunk."""
    sessions: SessionService = request.app.state.sessions
    x, chunk_offset = await read_chunk(request, offset)
    binary = wants_binary(request)
    rows = None if binary or len(x) <= THREAD_OFFLOAD_STEPS else EncodedRows()
    result = await sessions.predict(namespace_of(request), session_id, x, chunk_offset, sink=rows)
    if binary:
        return binary_answer(
            result.outputs,
            {
                "offset": str(result.offset),
                "steps": str(result.record.steps),
                "replayed": "true" if result.replayed else "false",
            },
        )
    parts = await answer_parts(
        heavy_work(request), result.outputs, partial(_chunk_answer, session_id, result), rows
    )
    return parts_answer(parts)


def _chunk_answer(session_id: str, result: ChunkResult, outputs: msgspec.Raw) -> bytes:
    return encoded(present.chunk_result(session_id, result, outputs))


@router.post(
    "/{session_id}/reset",
    response_model=SessionInfo,
    responses=responses(errors.SessionNotFound, errors.ModelNotFound),
    summary="Return a session to zero state and step 0",
    description="On the model's latest version, or the version number in the body.",
)
async def reset_session(
    session_id: SessionId,
    sessions: Sessions,
    namespace: Namespace,
    body: Annotated[
        ResetRequest | None,
        Body(
            openapi_examples={
                "latest": {"summary": "On the latest version", "value": {}},
                "pinned": {"summary": "On version 2", "value": {"version": 2}},
            }
        ),
    ] = None,
) -> JSONResponse:
    version = body.version if body is not None else None
    record = await sessions.reset(namespace, session_id, version)
    return JSONResponse(present.session_info(session_id, record))


@router.delete(
    "/{session_id}",
    status_code=204,
    response_class=Response,
    responses=responses(errors.SessionNotFound),
    summary="Delete a session",
)
async def delete_session(
    session_id: SessionId, sessions: Sessions, namespace: Namespace
) -> Response:
    await sessions.delete(namespace, session_id)
    return Response(status_code=204)
