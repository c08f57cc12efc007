"""The asyncio client: `AsyncClient` and `AsyncSession`, the same API as the sync one."""

import asyncio
from collections.abc import AsyncIterator
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
from lstm_stream_client.websocket import AsyncSessionStream
from lstm_stream_client.wire import ChunkAnswer, Floats, HttpCall, ModelInfo, SessionInfo


class AsyncClient:
    """`Client` for asyncio: same calls, awaited; share one across many sessions."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        binary: bool | None = None,
        max_connections: int = 100,
    ) -> None:
        self.config = ClientConfig(url, api_key, retry or RetryPolicy(), binary)
        self._http = httpx.AsyncClient(
            base_url=url,
            headers=self.config.headers(),
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections),
        )

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send_counted(self, call: HttpCall) -> tuple[httpx.Response, int]:
        backoff = self.config.retry.backoff()
        while True:
            response: httpx.Response | None = None
            try:
                response = await self._http.request(call.method, call.path, **call.kwargs())
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
            await asyncio.sleep(delay)

    async def _send(self, call: HttpCall) -> httpx.Response:
        return (await self._send_counted(call))[0]

    async def _json(self, call: HttpCall) -> Any:
        return wire.checked(await self._send(call)).json()

    async def _binary(self) -> bool:
        if self.config.binary is None:
            try:
                response = await self._http.get("/openapi.json")
            except TRANSPORT_ERRORS:
                return False
            self.config.binary = response.status_code == 200 and wire.offers_binary(response.json())
        return self.config.binary

    async def models(self) -> list[ModelInfo]:
        body = await self._json(wire.json_call("GET", "/v1/models"))
        return [ModelInfo.from_json(item) for item in body["models"]]

    async def model(self, name: str) -> ModelInfo:
        if name not in self.config.models:
            body = await self._json(wire.json_call("GET", f"/v1/models/{name}"))
            self.config.models[name] = ModelInfo.from_json(body)
        return self.config.models[name]

    async def predict(self, model: str, x: Any) -> Floats:
        inputs = wire.as_inputs(x)
        binary = await self._binary()
        info = await self.model(model) if binary else None
        response = await self._send(wire.predict_call(model, inputs, binary))
        if binary and response.status_code == 415:
            self.config.binary = False
            return await self.predict(model, inputs)
        return wire.predict_answer(response, inputs, info)

    async def create_session(
        self, model: str, session_id: str | None = None, ttl_seconds: int | None = None
    ) -> "AsyncSession":
        sid, call = self.config.create_call(model, session_id, ttl_seconds)
        response, resends = await self._send_counted(call)
        try:
            body = wire.checked(response).json()
        except SessionExists:
            if not resends:
                raise
            info = await self._session_info(sid)
            adopt_after_resend(info, model)
            return AsyncSession(self, info)
        return AsyncSession(self, SessionInfo.from_json(body))

    async def session(self, session_id: str) -> "AsyncSession":
        return AsyncSession(self, await self._session_info(session_id))

    async def _session_info(self, session_id: str) -> SessionInfo:
        body = await self._json(wire.json_call("GET", f"/v1/sessions/{session_id}"))
        return SessionInfo.from_json(body)

    async def _chunk(self, session: "AsyncSession", x: Floats, offset: int) -> ChunkAnswer:
        binary = await self._binary()
        info = await self.model(session.model) if binary else None
        response = await self._send(wire.chunk_call(session.id, x, offset, binary))
        if binary and response.status_code == 415:
            self.config.binary = False
            return await self._chunk(session, x, offset)
        return checked_offset(wire.chunk_answer(response, x, offset, info), offset)


class AsyncSession:
    """`Session` for asyncio. One chunk at a time per session: awaiting `predict` twice
    concurrently on one session would race for one offset."""

    def __init__(self, client: AsyncClient, info: SessionInfo) -> None:
        self.client = client
        self.id = info.session_id
        self.model = info.model
        self.steps = info.steps

    def __repr__(self) -> str:
        return f"AsyncSession({self.id!r}, model={self.model!r}, steps={self.steps})"

    async def send(self, x: Any) -> ChunkAnswer:
        answer = await self.client._chunk(self, wire.as_inputs(x), self.steps)
        self.steps = answer.steps
        return answer

    async def predict(self, x: Any) -> Floats:
        return (await self.send(x)).outputs

    async def stream(self, x: Any, chunk_steps: int = 50) -> AsyncIterator[Floats]:
        if chunk_steps < 1:
            raise ValueError("chunk_steps must be at least 1")
        inputs = wire.as_inputs(x)
        for start in range(0, inputs.shape[0], chunk_steps):
            yield await self.predict(inputs[start : start + chunk_steps])

    async def info(self) -> SessionInfo:
        return await self.client._session_info(self.id)

    async def refresh(self) -> SessionInfo:
        info = await self.info()
        self.steps = info.steps
        return info

    async def reset(self) -> SessionInfo:
        body = await self.client._json(wire.json_call("POST", f"/v1/sessions/{self.id}/reset"))
        info = SessionInfo.from_json(body)
        self.steps = info.steps
        return info

    async def delete(self) -> None:
        response, resends = await self.client._send_counted(
            wire.json_call("DELETE", f"/v1/sessions/{self.id}")
        )
        if response.status_code == 404 and resends:
            return
        wire.checked(response)

    def websocket(self, binary: bool = True) -> "AsyncSessionStream":
        """`Session.websocket()` for asyncio: `async with session.websocket() as stream`."""
        return AsyncSessionStream(self, binary)
