"""The published OpenAPI document, made to say what the service really answers.

FastAPI declares its own 422 body (`{"detail": [...]}`) on every route with parameters;
this service answers `{"error": {"code": "invalid_input", ...}}` under `/v1` and never 422
under `/v2`. With API keys configured, the document also carries the bearer scheme (so
`/docs` shows an Authorize button) and the 401 each protected operation can answer.
"""

from typing import Any

from fastapi import FastAPI

from service.api.auth import is_protected
from service.api.errors import is_v2, responses
from service.api.schemas import ChunkRequest, ChunksRequest, PredictRequest
from service.errors import InvalidInput, Unauthorized

SCHEME = "apiKey"
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"
# The operations an OpenAPI path item can hold.
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_V2_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}


def _error_response(kind: type[InvalidInput] | type[Unauthorized]) -> dict[str, Any]:
    response = dict(responses(kind)[kind.status])
    response["content"] = {
        "application/json": {
            **response["content"]["application/json"],
            "schema": {"$ref": "#/components/schemas/ErrorBody"},
        }
    }
    response.pop("model")
    return response


def _declares_fastapi_422(operation: dict[str, Any]) -> bool:
    response = operation.get("responses", {}).get("422", {})
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref") == _FASTAPI_422)


def _fix_validation_errors(document: dict[str, Any]) -> None:
    for path, item in document.get("paths", {}).items():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if operation is None or not _declares_fastapi_422(operation):
                continue
            if is_v2(path):
                del operation["responses"]["422"]  # V2 routes answer 400 instead
            else:
                operation["responses"]["422"] = _error_response(InvalidInput)
    schemas = document.get("components", {}).get("schemas", {})
    if _FASTAPI_422.rsplit("/", 1)[1] not in str(document.get("paths")):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def _add_security(document: dict[str, Any]) -> None:
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `LSTM_API_KEYS`, sent as `Authorization: Bearer <key>`. "
        "Each key sees only the sessions created with it.",
    }
    for path, item in document.get("paths", {}).items():
        if not is_protected(path):
            continue
        for method in HTTP_METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            operation["security"] = [{SCHEME: []}]
            if is_v2(path):
                unauthorized = {
                    "description": "`unauthorized`: missing or unknown API key",
                    "content": {"application/json": {"schema": _V2_ERROR}},
                }
            else:
                unauthorized = _error_response(Unauthorized)
            unauthorized["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`"}
            }
            operation.setdefault("responses", {})["401"] = unauthorized


# A created session's id feeds the session routes: OpenAPI links, which Swagger UI shows
# and API fuzzers follow.
_SESSION_LINKS = {
    "StreamChunk": ("/v1/sessions/{session_id}/predict", "post"),
    "DescribeSession": ("/v1/sessions/{session_id}", "get"),
    "ResetSession": ("/v1/sessions/{session_id}/reset", "post"),
    "DeleteSession": ("/v1/sessions/{session_id}", "delete"),
}


def _add_session_links(document: dict[str, Any]) -> None:
    paths = document.get("paths", {})
    created = paths.get("/v1/models/{model}/sessions", {}).get("post", {})
    response = created.get("responses", {}).get("201")
    if response is None:
        return
    links = response.setdefault("links", {})
    for name, (path, method) in _SESSION_LINKS.items():
        operation = paths.get(path, {}).get(method)
        if operation is not None and "operationId" in operation:
            links[name] = {
                "operationId": operation["operationId"],
                "parameters": {"session_id": "$response.body#/session_id"},
            }


def _add_request_schemas(document: dict[str, Any]) -> None:
    # The tensor routes read their bodies themselves (JSON or binary), so FastAPI does not
    # list the JSON body's schema that their requestBody refers to.
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (ChunkRequest, PredictRequest, ChunksRequest):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, nested in schema.pop("$defs", {}).items():
            schemas.setdefault(name, nested)
        schemas.setdefault(model.__name__, schema)


def install_openapi(app: FastAPI, secured: bool) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            _fix_validation_errors(document)
            _add_request_schemas(document)
            _add_session_links(document)
            if secured:
                _add_security(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
