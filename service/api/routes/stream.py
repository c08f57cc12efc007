"""`GET /v1/sessions/{id}/stream`: a session's chunks over one WebSocket.

A thin transport over the same `SessionService.predict` as the HTTP chunk route: one
message per chunk each way, answered in order, the state written to Redis before each
answer. A text message is the chunk route's JSON body and gets its JSON answer; a binary
frame is the chunk's little-endian float32 rows and gets the outputs the same way. A
binary chunk's offset is `?offset=n` for the first one, then the step after the last chunk
answered on this socket (none known: appended, as a JSON chunk without `offset`).
Errors are the route's `{"error": {...}}` objects as text messages; the socket stays open
for the next chunk unless the session is gone. Every chunk is counted (`lstm_stream_chunks`,
by outcome) and the stream's close line in the access log says how many it answered.
"""

import re

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from service import errors
from service.api import present
from service.api.bodies import chunk_from_json, encoded, float32_bytes, floats_from_bytes
from service.api.deps import DEFAULT_NAMESPACE
from service.api.errors import error_text, refuse_websocket
from service.api.observe import stream_tally
from service.api.schemas import SESSION_ID_PATTERN
from service.core.session_record import SessionRecord
from service.core.sessions import SessionService
from service.metrics import PrometheusMetrics

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])

# After these the socket is closed (code 4000 + HTTP status): no later chunk can succeed.
FATAL = (errors.SessionNotFound, errors.ModelNotFound)
TRANSPORT = "websocket"
SESSION_ID = re.compile(SESSION_ID_PATTERN)


def _offset(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit():
        raise errors.InvalidInput("offset must be a non-negative integer")
    return int(raw)


@router.websocket("/{session_id}/stream", name="stream_chunks")
async def stream_chunks(websocket: WebSocket, session_id: str) -> None:
    sessions: SessionService = websocket.app.state.sessions
    max_bytes: int = websocket.app.state.settings.max_body_bytes
    metrics: PrometheusMetrics = websocket.app.state.metrics
    namespace = websocket.scope.get("state", {}).get("namespace", DEFAULT_NAMESPACE)
    tally = stream_tally(websocket.scope)
    try:
        if not SESSION_ID.match(session_id):
            raise errors.InvalidInput(f"session id must match {SESSION_ID_PATTERN}")
        next_offset = _offset(websocket.query_params.get("offset"))
        known: SessionRecord | None = await sessions.get(namespace, session_id)
    except errors.ServiceError as error:
        await refuse_websocket(websocket.scope, websocket.receive, websocket.send, error)
        return
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                tally.close_code = message.get("code", 1000)
                return
            frame = message.get("bytes")
            try:
                if len(frame if frame is not None else message.get("text") or "") > max_bytes:
                    raise errors.PayloadTooLarge(max_bytes, " (one WebSocket message)")
                if frame is not None:
                    x, offset = floats_from_bytes(frame), next_offset
                else:
                    x, offset = chunk_from_json(message.get("text") or "")
                result = await sessions.predict(namespace, session_id, x, offset, known)
            except errors.ServiceError as error:
                known = None
                tally.errors += 1
                metrics.stream_chunk(TRANSPORT, error.code)
                metrics.error(error.code)
                await websocket.send_text(error_text(error))
                if isinstance(error, FATAL):
                    await websocket.close(code=4000 + error.status, reason=error.code)
                    return
                continue
            known, next_offset = result.record, result.record.steps
            tally.chunks += 1
            tally.replayed += result.replayed
            metrics.stream_chunk(TRANSPORT, "replayed" if result.replayed else "applied")
            if frame is not None:
                await websocket.send_bytes(float32_bytes(result.outputs))
            else:
                answer = encoded(present.chunk_result(session_id, result))
                await websocket.send_text(answer.decode())
    except WebSocketDisconnect:
        return
