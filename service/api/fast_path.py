"""The chunk routes (`POST /v1/sessions/{session_id}/predict` and `POST /v1/chunks`) without
FastAPI's routing and parameter solving, which cost about a fifth of a 1-step chunk's CPU.

Every middleware still runs (request id, access log, metrics, auth, rate limit, body size),
and the work is the route's own function (`answer_chunk`, `predict_chunks`). Only requests
FastAPI would accept unchanged take this path: a session id matching its pattern and no
query but `offset=n`; `/v1/chunks` with no query. Anything else (a bad id or offset,
another route) goes on to FastAPI, whose answers, errors included, are the same as before."""

import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.routes import chunks
from service.api.routes.chunks import predict_chunks
from service.api.routes.sessions import answer_chunk, predict_chunk, router
from service.api.schemas import SESSION_ID_PATTERN

_CHUNK_PATH = re.compile(
    rf"/v1/sessions/(?P<session_id>{SESSION_ID_PATTERN.strip('^$')})/predict", re.ASCII
)
_OFFSET_QUERY = re.compile(rb"(?:offset=(\d{1,18}))?", re.ASCII)


class ChunkFastPath:
    """Innermost middleware: well-formed chunk requests straight to `answer_chunk` (or
    `predict_chunks`), their errors to the app's own exception handlers."""

    def __init__(self, app: ASGIApp, service: FastAPI) -> None:
        self.app = app
        self.service = service
        self._route = _route_of(router.routes, predict_chunk)
        self._many_route = _route_of(chunks.router.routes, predict_chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            if scope["path"] == "/v1/chunks" and not scope["query_string"]:
                scope["route"] = self._many_route
                scope["path_params"] = {}
                await self._answer(scope, receive, send, predict_chunks)
                return
            path = _CHUNK_PATH.fullmatch(scope["path"])
            query = _OFFSET_QUERY.fullmatch(scope["query_string"]) if path else None
            if path and query:
                session_id, offset = path["session_id"], query[1]
                scope["route"] = self._route  # the access log and metrics name its template
                scope["path_params"] = {"session_id": session_id}
                at = int(offset) if offset is not None else None
                await self._answer(scope, receive, send, answer_chunk, session_id, at)
                return
        await self.app(scope, receive, send)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: Callable[..., Awaitable[Response]],
        *args: Any,
    ) -> None:
        request = Request(scope, receive, send)
        try:
            response = await route(request, *args)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise  # unexpected: answered 500 by the outermost handler, as on any route
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Any:
        """The handler FastAPI's ExceptionMiddleware would pick (the catch-all for
        `Exception` is the outermost middleware's, as for every route)."""
        handlers = self.service.exception_handlers
        for kind in type(exc).__mro__:
            if kind is Exception:
                return None
            if kind in handlers:
                return handlers[kind]
        return None


def _route_of(routes: list[Any], endpoint: Callable[..., Any]) -> Any:
    return next(route for route in routes if getattr(route, "endpoint", None) is endpoint)
