"""Per request: an `X-Request-ID`, one JSON access-log line and the HTTP metrics; per
WebSocket stream, a line when it opens and one when it closes, with what it answered."""

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from re import Pattern
from typing import Any

from fastapi import FastAPI
from starlette.routing import Match, Mount, Route, WebSocketRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import clip
from service.logs import ACCESS_LOGGER
from service.metrics import PrometheusMetrics

access_log = logging.getLogger(ACCESS_LOGGER)

REQUEST_ID_HEADER = b"x-request-id"
# A client's request id is kept when it is short and plain; otherwise one is generated.
_CLIENT_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:/+=-]{1,128}$")
UNMATCHED = "<unmatched>"
CLIENT_GONE = 499
# Path parameters worth a field of their own in the access log.
_LOGGED_PARAMS = ("session_id", "model")
SWITCHING_PROTOCOLS = 101
# A handshake closed before it was accepted, with no HTTP answer: refused (ASGI spec).
REFUSED_WITHOUT_ANSWER = 403


@dataclass
class StreamTally:
    """What one WebSocket stream answered: its route counts here, its close line tells."""

    chunks: int = 0
    replayed: int = 0
    errors: int = 0
    close_code: int | None = None
    # The server's own `send`, below every wrapper: those watch the handshake and the close
    # only, so a stream's data messages can skip their frames (one send per chunk).
    server_send: Send | None = None


def stream_tally(scope: Scope) -> StreamTally:
    tally: StreamTally = scope.setdefault("state", {}).setdefault("stream", StreamTally())
    return tally


_second: tuple[int, str] = (-1, "")


def log_timestamp(now: float) -> str:
    """ISO 8601 UTC with milliseconds; the part up to the second is formatted once a second."""
    global _second
    second = int(now)
    if second != _second[0]:
        _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second[1]}.{int((now - second) * 1000):03d}Z"


def note_error(scope: Scope, code: str) -> None:
    """Tell the observer which error code a response carries (for metrics and the log)."""
    scope.setdefault("state", {})["error_code"] = code


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if _CLIENT_REQUEST_ID.match(value):
                return str(value.decode())
            break
    return os.urandom(16).hex()


def route_templates(app: FastAPI) -> list[tuple[Pattern[str], str]]:
    """Every documented path template, and the app's own top-level routes and mounts."""
    found = [(compile_path(path)[0], path) for path in app.openapi().get("paths", {})]
    for route in app.routes:
        if isinstance(route, Route | WebSocketRoute | Mount):
            found.append((route.path_regex, route.path))
    return found


# The methods a 405's `Allow` header can name.
_CANDIDATE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method Starlette's routing would accept on this path, for a 405's `Allow`
    header (Starlette itself names only the methods of the first route that matches)."""
    methods = {
        method
        for method in _CANDIDATE_METHODS
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in app.routes)
    }
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _in_progress(scope: Scope) -> contextlib.AbstractContextManager[None]:
    """The request counted as in progress, for heavy work's slicing (`HeavyWork.request`)."""
    sessions = getattr(scope["app"].state, "sessions", None)
    return sessions.heavy.request() if sessions is not None else contextlib.nullcontext()


class RequestObserver:
    """Outermost middleware: times each request, labels it by route template, returns an
    `X-Request-ID`, counts errors by code and writes the access log."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: PrometheusMetrics,
        templates: Callable[[], list[tuple[Pattern[str], str]]],
        log_requests: bool = True,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = templates
        self._matchers: list[tuple[Pattern[str], str]] | None = None
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._stream(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 0
        header = (REQUEST_ID_HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            with _in_progress(scope):
                await self.app(scope, receive, send_with_id)
        except Exception:
            if not status:  # the app's outermost handler answers 500 after this
                note_error(scope, "internal_error")
                status = 500
            raise
        finally:
            # Still 0: cancelled before answering (the client went away), logged as nginx does.
            self._done(scope, request_id, status or CLIENT_GONE, time.perf_counter() - started)

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        tally = stream_tally(scope)
        tally.server_send = send
        status = 0
        header = (REQUEST_ID_HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if not status:  # only the handshake's answer: every later message goes straight on
                kind = message["type"]
                if kind == "websocket.accept" or kind == "websocket.http.response.start":
                    status = message.get("status", SWITCHING_PROTOCOLS)
                    message["headers"] = [*message.get("headers", ()), header]
                elif kind == "websocket.close":
                    status = REFUSED_WITHOUT_ANSWER
                if status == SWITCHING_PROTOCOLS:
                    self.metrics.stream_opened("websocket")
                    self._log_stream(scope, request_id, "open", status)
            elif message["type"] == "websocket.close" and tally.close_code is None:
                tally.close_code = message.get("code", 1000)
            await send(message)

        try:
            with _in_progress(scope):  # a stream's chunks may come at any time: all its life
                await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            if status == SWITCHING_PROTOCOLS:
                self.metrics.stream_closed("websocket")
                self._log_stream(scope, request_id, "close", status, seconds, tally)
            else:  # refused, or the client left before an answer (logged as nginx does)
                code = scope["state"].get("error_code")
                if code is None and status:
                    code = f"http_{status}"
                if code is not None:
                    self.metrics.error(code)
                self._log_stream(
                    scope, request_id, "refused", status or CLIENT_GONE, seconds, code=code
                )

    def _log_stream(
        self,
        scope: Scope,
        request_id: str,
        event: str,
        status: int,
        seconds: float | None = None,
        tally: StreamTally | None = None,
        code: str | None = None,
    ) -> None:
        if not (self.log_requests and access_log.isEnabledFor(logging.INFO)):
            return
        route, params = self._template(scope)
        line = self._line(scope, "GET", route, status, request_id, params)
        line["event"] = event
        if seconds is not None:
            line["duration_ms"] = round(seconds * 1000, 3)
        if tally is not None:
            line["chunks"] = tally.chunks
            line["replayed"] = tally.replayed
            line["errors"] = tally.errors
            line["close_code"] = tally.close_code
        if code is not None:
            line["error"] = code
        access_log.info(json.dumps(line, ensure_ascii=False))

    def _template(self, scope: Scope) -> tuple[str, dict[str, Any]]:
        """The route template and path parameters; never the raw path (it holds ids)."""
        route = scope.get("route")
        if route is not None and hasattr(route, "path"):
            return str(route.path), scope.get("path_params", {})
        # Answered before routing (401, a declared 413), or not routed to an endpoint.
        if self._matchers is None:
            self._matchers = self.templates()
        for regex, template in self._matchers:
            match = regex.match(scope["path"])
            if match:
                return template, match.groupdict()
        return UNMATCHED, {}

    def _done(self, scope: Scope, request_id: str, status: int, seconds: float) -> None:
        route, params = self._template(scope)
        self.metrics.request_done(scope["method"], route, status, seconds)
        state = scope.get("state", {})
        code = state.get("error_code")
        if code is None and status >= 400:
            code = f"http_{status}"
        if code is not None:
            self.metrics.error(code)
        if self.log_requests and access_log.isEnabledFor(logging.INFO):
            line = self._line(scope, scope["method"], route, status, request_id, params)
            line["duration_ms"] = round(seconds * 1000, 3)
            if code is not None:
                line["error"] = code
            access_log.info(json.dumps(line, ensure_ascii=False))

    @staticmethod
    def _line(
        scope: Scope,
        method: str,
        route: str,
        status: int,
        request_id: str,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        line: dict[str, Any] = {
            "ts": log_timestamp(time.time()),
            "method": method,
            "route": route,
            "status": status,
            "request_id": request_id,
        }
        for name in _LOGGED_PARAMS:
            if name in params:
                line[name] = clip(str(params[name]))
        state = scope.get("state", {})
        if "namespace" in state:
            line["key_id"] = state["namespace"]
        if "error_code" in state:
            line["error"] = state["error_code"]
        return line
