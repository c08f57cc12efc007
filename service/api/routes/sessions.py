from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service import errors
from service.api import present
from service.api.deps import Namespace, SessionId, Sessions, namespace_of
from service.api.errors import responses
from service.api.schemas import ChunkRequest, ChunkResponse, SessionInfo
from service.core.inputs import as_array
from service.core.sessions import SessionService

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


@router.post(
    "/{session_id}/predict",
    response_model=ChunkResponse,
    responses=responses(
        errors.SessionNotFound,
        errors.OffsetConflict,
        errors.ModelVersionMismatch,
        errors.InvalidInput,
        errors.PayloadTooLarge,
    ),
    summary="Stream the next chunk",
    description=(
        "Applies the chunk at the session's current step and returns its outputs. With "
        "`offset`, a retry of the last chunk returns the stored answer (`replayed: true`) "
        "and any other offset is 409 `offset_conflict`."
    ),
)
async def predict_chunk(
    session_id: SessionId, body: ChunkRequest, request: Request
) -> JSONResponse:
    # The hot path reads the service and namespace off the request itself: FastAPI's
    # dependency solving for them costs ~40 us, a few percent of a 1-step chunk.
    sessions: SessionService = request.app.state.sessions
    x = as_array(body.inputs)
    result = await sessions.predict(namespace_of(request), session_id, x, body.offset)
    return JSONResponse(present.chunk_result(session_id, result))


@router.post(
    "/{session_id}/reset",
    response_model=SessionInfo,
    responses=responses(errors.SessionNotFound, errors.ModelNotFound),
    summary="Return a session to zero state and step 0",
)
async def reset_session(
    session_id: SessionId, sessions: Sessions, namespace: Namespace
) -> JSONResponse:
    return JSONResponse(
        present.session_info(session_id, await sessions.reset(namespace, session_id))
    )


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
