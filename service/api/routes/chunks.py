from fastapi import APIRouter, Request, Response

from service import errors
from service.api import present
from service.api.bodies import json_answer
from service.api.deps import namespace_of
from service.api.errors import responses
from service.api.schemas import ChunksRequest, ChunksResponse
from service.core.inputs import as_array
from service.core.many_chunks import ChunkItem, predict_many
from service.core.sessions import ChunkResult, SessionService

router = APIRouter(prefix="/v1", tags=["sessions"])


@router.post(
    "/chunks",
    response_model=ChunksResponse,
    responses=responses(errors.InvalidInput, errors.PayloadTooLarge),
    summary="Stream chunks of many sessions at once",
    description=(
        "For gateways that forward many sensors at once. Each chunk is applied exactly as "
        "`POST /v1/sessions/{session_id}/predict` would apply it (exactly once; with "
        "`offset`, a retry is answered again and a stale chunk refused), and chunks of one "
        "session apply in request order. The answer is 200 with one result per chunk: its "
        "answer, or its error (`session_not_found`, `offset_conflict`, "
        "`model_version_mismatch`, `invalid_input`, `session_busy`, ...), and a failed chunk "
        "changes nothing. A body that does not fit the schema, or holds more than "
        "`LSTM_MAX_CHUNKS_PER_REQUEST` chunks, is 422 for the whole request."
    ),
)
async def predict_chunks(body: ChunksRequest, request: Request) -> Response:
    sessions: SessionService = request.app.state.sessions
    limit = request.app.state.settings.max_chunks_per_request
    if len(body.chunks) > limit:
        raise errors.InvalidInput(
            f"{len(body.chunks)} chunks exceed the limit of {limit} per request",
            max_chunks=limit,
        )
    outcomes: list[ChunkResult | errors.ServiceError | None] = []
    items = []
    for chunk in body.chunks:
        try:
            items.append(ChunkItem(chunk.session_id, as_array(chunk.inputs), chunk.offset))
            outcomes.append(None)
        except errors.InvalidInput as error:  # this chunk only: the others go ahead
            outcomes.append(error)
    applied = iter(await predict_many(sessions, namespace_of(request), items))
    answered = [next(applied) if outcome is None else outcome for outcome in outcomes]
    ids = [chunk.session_id for chunk in body.chunks]
    return json_answer({"results": present.chunk_outcomes(ids, answered)})
