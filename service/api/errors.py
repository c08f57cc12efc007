"""The one place that turns failures into `{"error": {"code", "message", ...}}` bodies."""

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope, Send

from service import errors
from service.api.observe import allowed_methods, note_error
from service.api.schemas import ErrorBody, error_example

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}

_EXAMPLE_MESSAGES: dict[type[errors.ServiceError], str] = {
    errors.ModelNotFound: "no model named 'nope' is served",
    errors.SessionNotFound: "session 'abc' does not exist or has expired",
    errors.SessionExists: "session 'abc' already exists",
    errors.OffsetConflict: "chunk offset 2 does not match session 'abc', which is at step 4",
    errors.SessionBusy: "session 'abc' is being written by other requests; retry",
    errors.ModelVersionMismatch: "session 'abc' was started on another version of 'seed-lstm'",
    errors.InvalidInput: "timestep 0 has 3 values; the model takes 2 features",
    errors.PayloadTooLarge: "request body exceeds 16777216 bytes",
    errors.Unauthorized: "missing or unknown API key",
    errors.TooManySessions: "this API key already holds 10000 live sessions; delete some or "
    "let them expire before creating more",
    errors.StoreUnavailable: "the session store is unreachable",
}


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **details}}


async def send_error(
    scope: Scope,
    send: Send,
    error: errors.ServiceError,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """Answer from ASGI middleware, before routing: the native error body, or the Open
    Inference Protocol's bare message under /v2; recorded for metrics and the access log."""
    note_error(scope, error.code)
    if scope["path"].startswith("/v2"):
        payload: dict[str, Any] = {"error": error.message}
    else:
        payload = error_body(error.code, error.message, **error.details)
    body = json.dumps(payload).encode()
    extra = [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def responses(*kinds: type[errors.ServiceError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the errors a route can return, with an example each."""
    by_status: dict[int, list[type[errors.ServiceError]]] = {}
    kind: type[errors.ServiceError]
    for kind in (*kinds, errors.StoreUnavailable):
        by_status.setdefault(kind.status, []).append(kind)
    out: dict[int | str, dict[str, Any]] = {}
    for status, group in sorted(by_status.items()):
        examples = {
            kind.code: {"value": error_example(kind.code, _EXAMPLE_MESSAGES.get(kind, kind.code))}
            for kind in group
        }
        out[status] = {
            "model": ErrorBody,
            "description": ", ".join(f"`{kind.code}`" for kind in group),
            "content": {"application/json": {"examples": examples}},
        }
    return out


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Pydantic echoes the offending input; a tensor can be megabytes, so drop it.
    return [
        {"loc": list(err.get("loc", ())), "type": err.get("type"), "msg": err.get("msg")}
        for err in exc.errors()[:20]
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.ServiceError)
    async def service_error(request: Request, exc: errors.ServiceError) -> JSONResponse:
        note_error(request.scope, exc.code)
        return JSONResponse(
            error_body(exc.code, exc.message, **exc.details),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        note_error(request.scope, errors.InvalidInput.code)
        details = _validation_details(exc)
        if any(d["type"] == "json_invalid" for d in details):
            message = "request body is not valid JSON"
        else:
            first = details[0] if details else {"loc": [], "msg": "invalid request"}
            where = ".".join(str(part) for part in first["loc"] if part != "body")
            message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return JSONResponse(
            error_body(errors.InvalidInput.code, message, errors=details),
            status_code=errors.InvalidInput.status,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot decode (not UTF-8): bad input like any other.
            note_error(request.scope, errors.InvalidInput.code)
            return JSONResponse(
                error_body(errors.InvalidInput.code, "request body is not valid JSON"),
                status_code=errors.InvalidInput.status,
            )
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        note_error(request.scope, code)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            allowed = allowed_methods(request.app, request.scope["path"])
            headers = {**(headers or {}), "Allow": ", ".join(allowed)} if allowed else headers
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)
