"""The one place that turns failures into error responses: `{"error": {"code", "message",
...}}` natively, or the Open Inference Protocol's `{"error": "message"}` under `/v2`."""

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from service import errors
from service.api.observe import allowed_methods, note_error
from service.api.schemas import ErrorBody, error_body

log = logging.getLogger(__name__)

V2_PREFIX = "/v2"
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "rate_limited",
}
# V2 clients treat any 4xx as "bad request"; a missing sequence is the client's mistake.
_V2_STATUS = {"invalid_input": 400, "session_not_found": 400, "model_version_mismatch": 400}


def is_v2(path: str) -> bool:
    """Whether `path` speaks the Open Inference Protocol (its own error shape)."""
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def _shaped(
    scope: Scope, status: int, code: str, message: str, details: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    note_error(scope, code)
    if is_v2(scope["path"]):
        return _V2_STATUS.get(code, status), {"error": message}
    return status, error_body(code, message, **details)


def render(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The error response for `request`, in its API's shape; recorded for metrics and logs."""
    status, payload = _shaped(request.scope, status, code, message, details or {})
    return JSONResponse(payload, status_code=status, headers=headers)


async def send_error(
    scope: Scope,
    send: Send,
    error: errors.ServiceError,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """`render` for ASGI middleware, which answers before routing."""
    status, payload = _shaped(scope, error.status, error.code, error.message, error.details)
    body = json.dumps(payload).encode()
    extra = [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def error_text(error: errors.ServiceError) -> str:
    """The native error body as text: what a WebSocket sends for a chunk it refuses."""
    return json.dumps(error_body(error.code, error.message, **error.details))


async def refuse_websocket(
    scope: Scope,
    receive: Receive,
    send: Send,
    error: errors.ServiceError,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """Refuse a WebSocket handshake: an HTTP answer with the error body where the server
    supports the denial-response extension, a bare refusal (HTTP 403) elsewhere."""
    status, payload = _shaped(scope, error.status, error.code, error.message, error.details)
    await receive()  # websocket.connect
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 4000 + status})
        return
    extra = [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *extra, *headers],
        }
    )
    await send({"type": "websocket.http.response.body", "body": json.dumps(payload).encode()})


def responses(*kinds: type[errors.ServiceError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the errors a route can return, with an example each."""
    by_status: dict[int, list[type[errors.ServiceError]]] = {}
    kind: type[errors.ServiceError]
    for kind in (*kinds, errors.StoreUnavailable):
        by_status.setdefault(kind.status, []).append(kind)
    out: dict[int | str, dict[str, Any]] = {}
    for status, group in sorted(by_status.items()):
        examples = {}
        for kind in group:
            example = kind.example()
            examples[kind.code] = {
                "value": error_body(example.code, example.message, **example.details)
            }
        out[status] = {
            "model": ErrorBody,
            "description": ", ".join(f"`{kind.code}`" for kind in group),
            "content": {"application/json": {"examples": examples}},
        }
    return out


def invalid_input(problems: Sequence[Any]) -> errors.InvalidInput:
    """`invalid_input` from pydantic's errors (a request body, a WebSocket message)."""
    # Pydantic echoes the offending input; a tensor can be megabytes, so drop it.
    details = [
        {"loc": list(err.get("loc", ())), "type": err.get("type"), "msg": err.get("msg")}
        for err in problems[:20]
    ]
    if any(d["type"] == "json_invalid" for d in details):
        message = "request body is not valid JSON"
    else:
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
    return errors.InvalidInput(message, errors=details)


def install_error_handlers(app: FastAPI) -> None:
    """One handler per exception type, for every route of both APIs."""

    @app.exception_handler(errors.ServiceError)
    async def service_error(request: Request, exc: errors.ServiceError) -> JSONResponse:
        return render(request, exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        invalid = invalid_input(exc.errors())
        return render(request, invalid.status, invalid.code, invalid.message, invalid.details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot decode (not UTF-8): bad input like any other.
            invalid = errors.InvalidInput
            return render(request, invalid.status, invalid.code, "request body is not valid JSON")
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            allowed = allowed_methods(request.app, request.scope)
            headers = {**(headers or {}), "Allow": ", ".join(allowed)} if allowed else headers
        return render(request, exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return render(request, 500, "internal_error", "internal server error")
