"""A session's chunks over one long-lived WebSocket (`GET /v1/sessions/{id}/stream`).

Each message is one chunk, each answer one message, in order. A binary frame is the
chunk's float32 rows; its offset is the one named by `?offset=n` at connect, then the step
after the last answered chunk. The connection is remade (at the unanswered chunk's offset)
after any failure, so a chunk is applied exactly once, as over HTTP.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from lstm_stream_client import wire
from lstm_stream_client.errors import RetriesExhausted, ServerError, error_from_body
from lstm_stream_client.retry import RETRYABLE_CODES, RETRYABLE_STATUSES
from lstm_stream_client.shared import checked_offset
from lstm_stream_client.wire import ChunkAnswer, Floats

if TYPE_CHECKING:
    from lstm_stream_client.aio import AsyncSession
    from lstm_stream_client.client import Session

CONNECTION_FAILURES = (WebSocketException, OSError, TimeoutError, EOFError)


def stream_url(base: str, session_id: str, offset: int) -> str:
    scheme, rest = base.split("://", 1)
    ws_scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    return f"{ws_scheme}://{rest.rstrip('/')}/v1/sessions/{session_id}/stream?offset={offset}"


def handshake_error(failure: InvalidStatus) -> ServerError:
    response = failure.response
    try:
        body = json.loads(response.body or b"")
    except ValueError:
        body = {"error": f"WebSocket handshake refused with HTTP {response.status_code}"}
    return error_from_body(response.status_code, body)


def message_for(x: Floats, offset: int, binary: bool) -> bytes | str:
    if binary:
        return x.tobytes()
    return json.dumps({"inputs": x.tolist(), "offset": offset})


def answer_from(
    reply: bytes | str, x: Floats, offset: int, model: wire.ModelInfo
) -> ChunkAnswer | ServerError:
    if isinstance(reply, bytes):
        outputs = wire.outputs_from_bytes(reply, x.shape[0], model)
        return ChunkAnswer(offset, offset + x.shape[0], False, outputs)
    body = json.loads(reply)
    if "error" in body:
        return error_from_body(None, body)
    return ChunkAnswer(
        offset=int(body["offset"]),
        steps=int(body["steps"]),
        replayed=bool(body["replayed"]),
        outputs=wire.outputs_from_json(body["outputs"]),
    )


class SessionStream:
    """`Session.websocket()`: `predict`, `send` and `stream` as on the session, over one
    WebSocket. Use it as a context manager; it moves the session's `steps` as it goes."""

    def __init__(self, session: "Session", binary: bool = True, timeout: float = 30.0) -> None:
        self.session = session
        self.binary = binary
        self.timeout = timeout
        self._socket: ClientConnection | None = None
        self._open = contextlib.ExitStack()

    def __enter__(self) -> "SessionStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._socket = None
        self._open.close()

    def _connect(self, offset: int) -> ClientConnection:
        config = self.session.client.config
        try:
            return self._open.enter_context(
                connect(
                    stream_url(config.url, self.session.id, offset),
                    additional_headers=config.headers(),
                    open_timeout=self.timeout,
                    max_size=None,
                    compression=None,
                )
            )
        except InvalidStatus as failure:
            if failure.response.status_code in RETRYABLE_STATUSES:
                raise
            raise handshake_error(failure) from None

    def send(self, x: Any) -> ChunkAnswer:
        inputs = wire.as_inputs(x)
        offset = self.session.steps
        model = self.session.client.model(self.session.model)
        message = message_for(inputs, offset, self.binary)
        backoff = self.session.client.config.retry.backoff()
        while True:
            try:
                if self._socket is None:
                    self._socket = self._connect(offset)
                self._socket.send(message)
                reply = self._socket.recv(timeout=self.timeout)
            except CONNECTION_FAILURES as failure:
                self.close()  # a late answer on this socket must never pair with a later chunk
                outcome: ChunkAnswer | ServerError | BaseException = failure
            else:
                outcome = answer_from(reply, inputs, offset, model)
            if isinstance(outcome, ChunkAnswer):
                answer = checked_offset(outcome, offset)
                self.session.steps = answer.steps
                return answer
            if isinstance(outcome, ServerError) and outcome.code not in RETRYABLE_CODES:
                raise outcome
            delay = backoff.next_delay()
            if delay is None:
                if isinstance(outcome, ServerError):
                    raise outcome
                raise RetriesExhausted(
                    f"WebSocket chunk at offset {offset}: gave up after {backoff.attempt} "
                    f"attempts: {outcome!r}",
                    backoff.attempt,
                    outcome,
                )
            time.sleep(delay)

    def predict(self, x: Any) -> Floats:
        return self.send(x).outputs

    def stream(self, x: Any, chunk_steps: int = 50) -> Iterator[Floats]:
        if chunk_steps < 1:
            raise ValueError("chunk_steps must be at least 1")
        inputs = wire.as_inputs(x)
        for start in range(0, inputs.shape[0], chunk_steps):
            yield self.predict(inputs[start : start + chunk_steps])


class AsyncSessionStream:
    """`AsyncSession.websocket()`: `SessionStream` for asyncio."""

    def __init__(self, session: "AsyncSession", binary: bool = True, timeout: float = 30.0) -> None:
        self.session = session
        self.binary = binary
        self.timeout = timeout
        self._socket: AsyncConnection | None = None
        self._open = contextlib.AsyncExitStack()

    async def __aenter__(self) -> "AsyncSessionStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._socket = None
        await self._open.aclose()

    async def _connect(self, offset: int) -> AsyncConnection:
        config = self.session.client.config
        try:
            return await self._open.enter_async_context(
                async_connect(
                    stream_url(config.url, self.session.id, offset),
                    additional_headers=config.headers(),
                    open_timeout=self.timeout,
                    max_size=None,
                    compression=None,
                )
            )
        except InvalidStatus as failure:
            if failure.response.status_code in RETRYABLE_STATUSES:
                raise
            raise handshake_error(failure) from None

    async def send(self, x: Any) -> ChunkAnswer:
        inputs = wire.as_inputs(x)
        offset = self.session.steps
        model = await self.session.client.model(self.session.model)
        message = message_for(inputs, offset, self.binary)
        backoff = self.session.client.config.retry.backoff()
        while True:
            try:
                if self._socket is None:
                    self._socket = await self._connect(offset)
                await self._socket.send(message)
                reply = await asyncio.wait_for(self._socket.recv(), self.timeout)
            except CONNECTION_FAILURES as failure:
                await self.aclose()
                outcome: ChunkAnswer | ServerError | BaseException = failure
            else:
                outcome = answer_from(reply, inputs, offset, model)
            if isinstance(outcome, ChunkAnswer):
                answer = checked_offset(outcome, offset)
                self.session.steps = answer.steps
                return answer
            if isinstance(outcome, ServerError) and outcome.code not in RETRYABLE_CODES:
                raise outcome
            delay = backoff.next_delay()
            if delay is None:
                if isinstance(outcome, ServerError):
                    raise outcome
                raise RetriesExhausted(
                    f"WebSocket chunk at offset {offset}: gave up after {backoff.attempt} "
                    f"attempts: {outcome!r}",
                    backoff.attempt,
                    outcome,
                )
            await asyncio.sleep(delay)

    async def predict(self, x: Any) -> Floats:
        return (await self.send(x)).outputs

    async def stream(self, x: Any, chunk_steps: int = 50) -> AsyncIterator[Floats]:
        if chunk_steps < 1:
            raise ValueError("chunk_steps must be at least 1")
        inputs = wire.as_inputs(x)
        for start in range(0, inputs.shape[0], chunk_steps):
            yield await self.predict(inputs[start : start + chunk_steps])
