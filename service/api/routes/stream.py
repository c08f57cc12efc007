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

import asyncio
import re

from fastapi import APIRouter, WebSocket
from starlette.types import Message

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
    namespace = websocket.scope.get("state", {}).get("namespace", DEFAULT_NAMESPACE)
    try:
        if not SESSION_ID.match(session_id):
            raise errors.InvalidInput(f"session id must match {SESSION_ID_PATTERN}")
        next_offset = _offset(websocket.query_params.get("offset"))
        known: SessionRecord | None = await sessions.get(namespace, session_id)
    except errors.ServiceError as error:
        await refuse_websocket(websocket.scope, websocket.receive, websocket.send, error)
        return
    await websocket.accept()
    stream = _Stream(websocket, sessions, namespace, session_id)
    # The message loop runs as a task of its own: each of its awaits that waits (a frame, the
    # batch, the write) then resumes only the loop's own frames, not the ~20 middleware and
    # routing coroutines the route runs inside (see docs/benchmarks.md, WebSocket stream).
    # Awaiting the task passes a cancellation on to it, and its exception back.
    await asyncio.get_running_loop().create_task(stream.serve(next_offset, known))


class _Stream:
    """One accepted socket's chunks, on the ASGI `receive` and `send` themselves: after the
    handshake a message is one of three known shapes, which Starlette's state checks add
    nothing to."""

    def __init__(
        self, websocket: WebSocket, sessions: SessionService, namespace: str, session_id: str
    ) -> None:
        state = websocket.app.state
        self.receive = websocket._receive
        self.send = websocket._send
        self.sessions = sessions
        self.namespace = namespace
        self.session_id = session_id
        self.max_bytes: int = state.settings.max_body_bytes
        self.metrics: PrometheusMetrics = state.metrics
        self.tally = stream_tally(websocket.scope)
        # Answers go straight to the server: the wrappers between watch only the handshake
        # and the close (which still go through them, as `self.send`).
        self.send_answer = self.tally.server_send or self.send

    async def serve(self, next_offset: int | None, known: SessionRecord | None) -> None:
        receive, tally, metrics = self.receive, self.tally, self.metrics
        predict, namespace, session_id = self.sessions.predict, self.namespace, self.session_id
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                tally.close_code = message.get("code", 1000)
                return
            frame = message.get("bytes")
            try:
                size = len(frame if frame is not None else message.get("text") or "")
                if size > self.max_bytes:
                    raise errors.PayloadTooLarge(self.max_bytes, " (one WebSocket message)")
                if frame is not None:
                    x, offset = floats_from_bytes(frame), next_offset
                else:
                    x, offset = chunk_from_json(message.get("text") or "")
                result = await predict(namespace, session_id, x, offset, known)
            except errors.ServiceError as error:
                known = None
                if not await self._refused(error):
                    continue
                return
            known, next_offset = result.record, result.record.steps
            tally.chunks += 1
            tally.replayed += result.replayed
            metrics.stream_chunk(TRANSPORT, "replayed" if result.replayed else "applied")
            if frame is not None:
                answer = {"type": "websocket.send", "bytes": float32_bytes(result.outputs)}
            else:
                text = encoded(present.chunk_result(session_id, result)).decode()
                answer = {"type": "websocket.send", "text": text}
            try:
                await self.send_answer(answer)
            except OSError:  # the server raises it once the client is gone
                return

    async def _sent(self, message: Message) -> bool:
        """Whether `message` went out: the server raises OSError once the client is gone."""
        try:
            await self.send(message)
        except OSError:
            return False
        return True

    async def _refused(self, error: errors.ServiceError) -> bool:
        """Answer a chunk's error; whether the socket is done (closed, or the client gone)."""
        self.tally.errors += 1
        self.metrics.stream_chunk(TRANSPORT, error.code)
        self.metrics.error(error.code)
        if not await self._sent({"type": "websocket.send", "text": error_text(error)}):
            return True
        if not isinstance(error, FATAL):
            return False
        close = {"type": "websocket.close", "code": 4000 + error.status, "reason": error.code}
        await self._sent(close)
        return True
