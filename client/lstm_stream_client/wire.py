"""What goes on the wire and back, without doing any I/O (shared by sync and async)."""

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from lstm_stream_client.errors import LstmStreamError, error_from_body

Floats = np.ndarray[Any, np.dtype[np.float32]]

OCTET_STREAM = "application/octet-stream"
CHUNK_PATH = "/v1/sessions/{session_id}/predict"
WIRE_FLOAT = np.dtype("<f4")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    input_features: int
    output_features: int
    per_step: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "ModelInfo":
        return cls(
            name=body["name"],
            version=body["version"],
            input_features=int(body["input_features"]),
            output_features=int(body["output_features"]),
            per_step=bool(body["per_step"]),
            raw=body,
        )


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    model: str
    model_version: str
    steps: int
    created_at: str
    updated_at: str
    expires_at: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "SessionInfo":
        return cls(**{name: body[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ChunkAnswer:
    offset: int
    steps: int
    replayed: bool
    outputs: Floats


@dataclass(frozen=True)
class HttpCall:
    """One request's arguments for `httpx.Client.request` / `httpx.AsyncClient.request`."""

    method: str
    path: str
    content: bytes | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] | None = None

    def kwargs(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "params": self.params,
            "headers": self.headers,
        }


def as_inputs(x: Any) -> Floats:
    """A (T, F) little-endian float32 array from any array-like of T rows of F numbers."""
    array = np.ascontiguousarray(np.asarray(x, dtype=WIRE_FLOAT))
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty (T, F) array, got shape {array.shape}")
    return array


def _json(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return json.dumps(payload).encode(), {"content-type": "application/json"}


def chunk_call(session_id: str, x: Floats, offset: int | None, binary: bool) -> HttpCall:
    path = CHUNK_PATH.format(session_id=session_id)
    if binary:
        params = {"offset": offset} if offset is not None else None
        headers = {"content-type": OCTET_STREAM, "accept": OCTET_STREAM}
        return HttpCall("POST", path, x.tobytes(), params, headers)
    payload: dict[str, Any] = {"inputs": x.tolist()}
    if offset is not None:
        payload["offset"] = offset
    content, headers = _json(payload)
    return HttpCall("POST", path, content, headers=headers)


def predict_call(model: str, x: Floats, binary: bool) -> HttpCall:
    path = f"/v1/models/{model}/predict"
    if binary:
        headers = {"content-type": OCTET_STREAM, "accept": OCTET_STREAM}
        return HttpCall("POST", path, x.tobytes(), headers=headers)
    content, headers = _json({"inputs": x.tolist()})
    return HttpCall("POST", path, content, headers=headers)


def json_call(method: str, path: str, payload: dict[str, Any] | None = None) -> HttpCall:
    if payload is None:
        return HttpCall(method, path)
    content, headers = _json(payload)
    return HttpCall(method, path, content, headers=headers)


def checked(response: httpx.Response) -> httpx.Response:
    """The response if it succeeded; else the typed error its body names, raised."""
    if response.status_code < 400:
        return response
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text or f"HTTP {response.status_code}"}
    raise error_from_body(response.status_code, body)


def outputs_from_bytes(content: bytes, steps: int, model: ModelInfo) -> Floats:
    values = np.frombuffer(content, dtype=WIRE_FLOAT).astype(np.float32)
    if not model.per_step:
        return values
    return values.reshape(steps, model.output_features)


def outputs_from_json(outputs: Any) -> Floats:
    return np.asarray(outputs, dtype=np.float32)


def _header_int(response: httpx.Response, name: str, default: int) -> int:
    value = response.headers.get(name, response.headers.get(f"x-{name}"))
    return int(value) if value is not None else default


def chunk_answer(
    response: httpx.Response, x: Floats, offset: int | None, model: ModelInfo | None
) -> ChunkAnswer:
    checked(response)
    if response.headers.get("content-type", "").startswith(OCTET_STREAM):
        if model is None:
            raise LstmStreamError("a binary answer needs the model's output shape")
        steps = x.shape[0]
        start = _header_int(response, "offset", offset if offset is not None else -1)
        replayed = response.headers.get("replayed", response.headers.get("x-replayed", ""))
        return ChunkAnswer(
            offset=start,
            steps=_header_int(response, "steps", start + steps),
            replayed=replayed.lower() == "true",
            outputs=outputs_from_bytes(response.content, steps, model),
        )
    body = response.json()
    return ChunkAnswer(
        offset=int(body["offset"]),
        steps=int(body["steps"]),
        replayed=bool(body["replayed"]),
        outputs=outputs_from_json(body["outputs"]),
    )


def predict_answer(response: httpx.Response, x: Floats, model: ModelInfo | None) -> Floats:
    checked(response)
    if response.headers.get("content-type", "").startswith(OCTET_STREAM) and model is not None:
        return outputs_from_bytes(response.content, x.shape[0], model)
    return outputs_from_json(response.json()["outputs"])


def offers_binary(openapi: Any) -> bool:
    """Whether the server's OpenAPI document lists binary bodies on the chunk route."""
    try:
        body = openapi["paths"][CHUNK_PATH]["post"]
        return OCTET_STREAM in body["requestBody"]["content"]
    except (KeyError, TypeError):
        return False
