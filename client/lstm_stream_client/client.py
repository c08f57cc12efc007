"""The synchronous client: `Client` and the `Session` it hands out."""

import time
from collections.abc import Iterator
from typing import Any

import httpx

from lstm_stream_client import wire
from lstm_stream_client.errors import RetriesExhausted, SessionExists
from lstm_stream_client.retry import (
    TRANSPORT_ERRORS,
    RetryPolicy,
    is_retryable,
    retry_after_seconds,
)
from lstm_stream_client.shared import ClientConfig, adopt_after_resend, checked_offset
from lstm_stream_client.websocket import SessionStream
from lstm_stream_client.wire import ChunkAnswer, Floats, HttpCall, ModelInfo, SessionInfo


class Client:
    """A connection to one lstm-stream server (or load balancer).

    Every call is resent on transport errors, timeouts and "not now" answers (503,
    `session_busy`, `rate_limited`) with jittered backoff within `retry`'s budget; session
    chunks carry their offset, so a resent chunk is applied exactly once.
    `binary=None` uses binary bodies when the server's OpenAPI document offers them.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        binary: bool | None = None,
    ) -> None:
        self.config = ClientConfig(url, api_key, retry or RetryPolicy(), binary)
        self._http = httpx.Client(base_url=url, headers=self.config.headers(), timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send_counted(self, call: HttpCall) -> tuple[httpx.Response, int]:
        backoff = self.config.retry.backoff()
        while True:
            response: httpx.Response | None = None
            try:
                response = self._http.request(call.method, call.path, **call.kwargs())
            except TRANSPORT_ERRORS as exc:
                failure: BaseException | None = exc
                retry_after = None
            else:
                if not is_retryable(response):
                    return response, backoff.attempt
                failure, retry_after = None, retry_after_seconds(response)
            delay = backoff.next_delay(retry_after)
            if delay is None:
                if response is not None:
                    return response, backoff.attempt
                raise RetriesExhausted(
                    f"{call.method} {call.path}: gave up after {backoff.attempt} attempts: "
                    f"{failure!r}",
                    backoff.attempt,
                    failure,
                )
            time.sleep(delay)

    def _send(self, call: HttpCall) -> httpx.Response:
        return self._send_counted(call)[0]

    def _json(self, call: HttpCall) -> Any:
        return wire.checked(self._send(call)).json()

    def _binary(self) -> bool:
        if self.config.binary is None:
            try:
                response = self._http.get("/openapi.json")
            except TRANSPORT_ERRORS:
                return False  # decided on a later call; JSON always works
            self.config.binary = response.status_code == 200 and wire.offers_binary(response.json())
        return self.config.binary

    def models(self) -> list[ModelInfo]:
        body = self._json(wire.json_call("GET", "/v1/models"))
        return [ModelInfo.from_json(item) for item in body["models"]]

    def model(self, name: str) -> ModelInfo:
        if name not in self.config.models:
            body = self._json(wire.json_call("GET", f"/v1/models/{name}"))
            self.config.models[name] = ModelInfo.from_json(body)
        return self.config.models[name]

    def predict(self, model: str, x: Any) -> Floats:
        """Stateless: the outputs of `model` on the whole sequence `x` (T, F)."""
        inputs = wire.as_inputs(x)
        binary = self._binary()
        info = self.model(model) if binary else None
        response = self._send(wire.predict_call(model, inputs, binary))
        if binary and response.status_code == 415:
            self.config.binary = False
            return self.predict(model, inputs)
        return wire.predict_answer(response, inputs, info)

    def create_session(
        self, model: str, session_id: str | None = None, ttl_seconds: int | None = None
    ) -> "Session":
        """A new session at step 0. Without `session_id` the client draws an unguessable
        one itself, so that a create resent after a lost answer is recognised."""
        sid, call = self.config.create_call(model, session_id, ttl_seconds)
        response, resends = self._send_counted(call)
        try:
            body = wire.checked(response).json()
        except SessionExists:
            if not resends:
                raise
            info = self._session_info(sid)
            adopt_after_resend(info, model)
            return Session(self, info)
        return Session(self, SessionInfo.from_json(body))

    def session(self, session_id: str) -> "Session":
        """An existing session, to resume at its current step."""
        return Session(self, self._session_info(session_id))

    def _session_info(self, session_id: str) -> SessionInfo:
        body = self._json(wire.json_call("GET", f"/v1/sessions/{session_id}"))
        return SessionInfo.from_json(body)

    def _chunk(self, session: "Session", x: Floats, offset: int) -> ChunkAnswer:
        binary = self._binary()
        info = self.model(session.model) if binary else None
        response = self._send(wire.chunk_call(session.id, x, offset, binary))
        if binary and response.status_code == 415:
            self.config.binary = False
            return self._chunk(session, x, offset)
        return checked_offset(wire.chunk_answer(response, x, offset, info), offset)


class Session:
    """One server-side session. Tracks its offset and sends it with every chunk: a chunk
    is applied exactly once whatever fails, or an `OffsetConflict` carrying the server's
    `steps` is raised; data is never silently skipped or repeated."""

    def __init__(self, client: Client, info: SessionInfo) -> None:
        self.client = client
        self.id = info.session_id
        self.model = info.model
        self.steps = info.steps

    def __repr__(self) -> str:
        return f"Session({self.id!r}, model={self.model!r}, steps={self.steps})"

    def send(self, x: Any) -> ChunkAnswer:
        """Apply the chunk `x` (T, F) at `steps`; the answer says whether it was a replay."""
        answer = self.client._chunk(self, wire.as_inputs(x), self.steps)
        self.steps = answer.steps
        return answer

    def predict(self, x: Any) -> Floats:
        """The outputs of the next chunk `x` (T, F): (T, U) float32, or (U,) for a model
        that answers only each chunk's last step."""
        return self.send(x).outputs

    def stream(self, x: Any, chunk_steps: int = 50) -> Iterator[Floats]:
        """Feed `x` in chunks of `chunk_steps`, yielding each chunk's outputs."""
        if chunk_steps < 1:
            raise ValueError("chunk_steps must be at least 1")
        inputs = wire.as_inputs(x)
        for start in range(0, inputs.shape[0], chunk_steps):
            yield self.predict(inputs[start : start + chunk_steps])

    def info(self) -> SessionInfo:
        """The server's view of the session (does not move `steps`)."""
        return self.client._session_info(self.id)

    def refresh(self) -> SessionInfo:
        """Take the server's `steps` as this session's position."""
        info = self.info()
        self.steps = info.steps
        return info

    def reset(self) -> SessionInfo:
        body = self.client._json(wire.json_call("POST", f"/v1/sessions/{self.id}/reset"))
        info = SessionInfo.from_json(body)
        self.steps = info.steps
        return info

    def delete(self) -> None:
        response, resends = self.client._send_counted(
            wire.json_call("DELETE", f"/v1/sessions/{self.id}")
        )
        if response.status_code == 404 and resends:
            return  # an earlier attempt deleted it and its answer was lost
        wire.checked(response)

    def websocket(self, binary: bool = True) -> SessionStream:
        """A WebSocket stream of this session's chunks: same offsets, same guarantees,
        one long-lived connection (reconnected by itself)."""
        return SessionStream(self, binary)
