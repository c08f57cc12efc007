"""Tensor bodies on `/v1`: strict JSON decoded by msgspec, or raw float32 bytes.

`Content-Type: application/octet-stream` bodies are little-endian float32, row-major
T x F (the core cuts them into the model's rows); the chunk's offset is then the query
parameter `?offset=n`. `Accept: application/octet-stream` gets the outputs in the same
form, with the chunk's `offset`, `steps` and `replayed` in headers. A JSON body's numbers
go straight into one float64 buffer (simdjson) when the body has exactly the expected
shape; anything else is decoded by msgspec into typed lists, which names what is wrong.
Answers are encoded by msgspec (~20x faster than `json.dumps`).
"""

import re
from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple

import msgspec
import numpy as np
import simdjson
from fastapi import Request, Response
from starlette.types import Receive, Scope, Send

from service.api.many_json import chunk_arrays
from service.api.schemas import SESSION_ID_PATTERN
from service.api.tensor_json import decode_rows, number_rows, open_brackets
from service.core.arrays import Floats
from service.core.fairness import LARGE_BODY_BYTES, HeavyWork
from service.core.inputs import as_array, as_arrays
from service.errors import InvalidInput

OCTET_STREAM = "application/octet-stream"
JSON = "application/json"


class _Sequence(msgspec.Struct, forbid_unknown_fields=True):
    inputs: list[list[float]]


class _Chunk(_Sequence, forbid_unknown_fields=True):
    offset: Annotated[int, msgspec.Meta(ge=0)] | None = None


# msgspec searches with `re`, whose `$` also matches before a final newline.
_SESSION_ID = msgspec.Meta(pattern=SESSION_ID_PATTERN.removesuffix("$") + r"\Z")


class ManyChunk(msgspec.Struct, forbid_unknown_fields=True):
    session_id: Annotated[str, _SESSION_ID]
    inputs: list[list[float]]
    offset: Annotated[int, msgspec.Meta(ge=0)] | None = None


class _ManyChunks(msgspec.Struct, forbid_unknown_fields=True):
    chunks: Annotated[list[ManyChunk], msgspec.Meta(min_length=1)]


class _RawChunk(msgspec.Struct, forbid_unknown_fields=True):
    session_id: str  # checked by `_SESSION_IDS` all at once
    inputs: msgspec.Raw
    offset: Annotated[int, msgspec.Meta(ge=0)] | None = None


class _RawChunks(msgspec.Struct, forbid_unknown_fields=True):
    chunks: Annotated[list[_RawChunk], msgspec.Meta(min_length=1)]


# Every id of a request at once, joined by newlines (which no id holds): one match instead of
# msgspec's search per id (~0.4 µs each).
_ONE_ID = SESSION_ID_PATTERN.removeprefix("^").removesuffix("$")
_SESSION_IDS = re.compile(rf"(?:{_ONE_ID}\n)*{_ONE_ID}\Z")

_SEQUENCE = msgspec.json.Decoder(_Sequence)
_MANY_CHUNKS = msgspec.json.Decoder(_ManyChunks)
_RAW_CHUNKS = msgspec.json.Decoder(_RawChunks)
_CHUNK = msgspec.json.Decoder(_Chunk)
_ENCODER = msgspec.json.Encoder()


def _is_binary(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower() == OCTET_STREAM


def wants_binary(request: Request) -> bool:
    return OCTET_STREAM in request.headers.get("accept", "")


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes | str) -> Any:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc)) from None
    except msgspec.DecodeError:
        raise InvalidInput("request body is not valid JSON") from None


def floats_from_bytes(body: bytes) -> Floats:
    """A binary body's (or WebSocket frame's) flat float32 values."""
    if not body or len(body) % 4:
        raise InvalidInput(
            f"a binary body is little-endian float32 values: {len(body)} bytes is not a "
            "positive multiple of 4"
        )
    return np.frombuffer(body, dtype="<f4").astype(np.float32)


def heavy_work(request: Request) -> HeavyWork:
    heavy: HeavyWork = request.app.state.sessions.heavy
    return heavy


_FIELDS = frozenset(("inputs", "offset"))
# Below this, msgspec's typed lists are the cheaper decode (a 1-step chunk: 2.9 against
# 5.3 µs); above, simdjson's buffer (a 10-step chunk of 3 KB: 10.0 against 11.8 µs).
_SIMD_MIN_BYTES = 2048


def _well_formed(body: bytes, fields: frozenset[str]) -> tuple[Floats, int | None] | None:
    """`{"inputs": T x F numbers, "offset"?: n}` without building a Python float per value,
    or None for anything else (msgspec then decodes it again and says what is wrong). The
    only strings are the field names, so every `[` in the body is an array's."""
    if len(body) < _SIMD_MIN_BYTES:
        return None
    try:
        document = simdjson.Parser().parse(body)
        if not isinstance(document, simdjson.Object):
            return None
        names = list(document.keys())
        if len(names) != len(set(names)) or not fields.issuperset(names):
            return None
        offset = document.get("offset")
        if offset is not None and (type(offset) is not int or offset < 0):
            return None
        x = number_rows(document["inputs"], open_brackets(body))
    except (KeyError, TypeError, ValueError, RuntimeError):
        return None
    return None if x is None else (x, offset)


async def read_sequence(request: Request) -> Floats:
    """(T, F) from JSON, or the flat float32 values of a binary body. A large JSON body is
    decoded off the event loop, in slices."""
    body = await request.body()
    if _is_binary(request):
        return floats_from_bytes(body)
    if len(body) > LARGE_BODY_BYTES:
        x, _ = await decode_rows(heavy_work(request), body, False, sequence_and_no_offset)
        return x
    return sequence_from_json(body)


async def read_chunk(request: Request, query_offset: int | None) -> tuple[Floats, int | None]:
    """The chunk and its offset (the body's, else the query's `?offset=n`)."""
    body = await request.body()
    if _is_binary(request):
        return floats_from_bytes(body), query_offset
    if len(body) > LARGE_BODY_BYTES:
        x, offset = await decode_rows(heavy_work(request), body, True, chunk_from_json)
    else:
        x, offset = chunk_from_json(body)
    return x, offset if offset is not None else query_offset


def sequence_from_json(body: bytes | str) -> Floats:
    """A JSON sequence (`{"inputs": T x F}`)."""
    fast = _well_formed(body if isinstance(body, bytes) else body.encode(), _FIELDS - {"offset"})
    if fast is not None:
        return fast[0]
    return as_array(_decode(_SEQUENCE, body).inputs)


def sequence_and_no_offset(body: bytes) -> tuple[Floats, None]:
    return sequence_from_json(body), None


def chunk_from_json(body: bytes | str) -> tuple[Floats, int | None]:
    """A JSON chunk (`{"inputs": T x F, "offset"?: n}`) and its offset, if it has one."""
    fast = _well_formed(body if isinstance(body, bytes) else body.encode(), _FIELDS)
    if fast is not None:
        return fast
    chunk = _decode(_CHUNK, body)
    return as_array(chunk.inputs), chunk.offset


class Chunks(NamedTuple):
    """`POST /v1/chunks`'s chunks as columns, one entry per chunk in request order."""

    session_ids: list[str]
    offsets: list[int | None]
    inputs: Sequence[Floats]  # (T, F) float32 each (empty where `refused`)
    finite: list[bool]  # whether every value of the chunk's inputs is finite
    refused: dict[int, InvalidInput]  # chunks whose inputs are no table of numbers


_REFUSED = np.empty((0, 0), np.float32)


async def read_chunks(request: Request, limit: int) -> Chunks:
    """`POST /v1/chunks`'s chunks (the `ChunksRequest` schema), each chunk's inputs as
    `as_arrays` gives them: all numbers parsed at once when the body is proven to be such
    chunks (`many_json`), else decoded into typed lists, which names what is wrong."""
    body = await request.body()
    try:
        raw = _RAW_CHUNKS.decode(body).chunks
    except msgspec.DecodeError:
        raw = None
    if raw is not None and len(raw) <= limit:
        ids = [chunk.session_id for chunk in raw]
        if _valid_ids(ids):
            arrays = chunk_arrays([chunk.inputs for chunk in raw])
            if arrays is not None:
                return Chunks(ids, [chunk.offset for chunk in raw], *arrays, {})
    chunks: list[ManyChunk] = _decode(_MANY_CHUNKS, body).chunks
    if len(chunks) > limit:
        raise InvalidInput(
            f"{len(chunks)} chunks exceed the limit of {limit} per request", max_chunks=limit
        )
    inputs: list[Floats] = []
    finite: list[bool] = []
    refused: dict[int, InvalidInput] = {}
    for index, converted in enumerate(as_arrays([c.inputs for c in chunks])):
        if isinstance(converted, InvalidInput):  # this chunk only: the others go ahead
            refused[index] = converted
            converted = (_REFUSED, False)
        inputs.append(converted[0])
        finite.append(converted[1])
    ids = [chunk.session_id for chunk in chunks]
    return Chunks(ids, [chunk.offset for chunk in chunks], inputs, finite, refused)


def _valid_ids(session_ids: list[str]) -> bool:
    """Whether every session id matches `SESSION_ID_PATTERN`, as `ManyChunk` checks it."""
    ids = "\n".join(session_ids)
    return ids.count("\n") == len(session_ids) - 1 and _SESSION_IDS.match(ids) is not None


def encoded(content: Any) -> bytes:
    return _ENCODER.encode(content)


def float32_bytes(outputs: Floats) -> bytes:
    return np.ascontiguousarray(outputs, dtype="<f4").tobytes()


def json_answer(content: dict[str, Any], status_code: int = 200) -> Response:
    return Response(encoded(content), status_code=status_code, media_type=JSON)


class PartsResponse(Response):
    """A body sent part after part (its whole length declared first), never joined: copying
    megabytes into one buffer holds the interpreter lock, and the event loop waits for it."""

    def __init__(self, parts: list[bytes], media_type: str) -> None:
        super().__init__(media_type=media_type)
        self.parts = parts
        self.headers["content-length"] = str(sum(map(len, parts)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        last = len(self.parts) - 1
        for index, part in enumerate(self.parts):
            await send({"type": "http.response.body", "body": part, "more_body": index < last})


def parts_answer(parts: list[bytes], media_type: str = JSON) -> Response:
    """The answer of `tensor_json.answer_parts`: one part as a plain response."""
    if len(parts) == 1:
        return Response(parts[0], media_type=media_type)
    return PartsResponse(parts, media_type)


def binary_answer(outputs: Floats, headers: dict[str, str]) -> Response:
    return Response(float32_bytes(outputs), media_type=OCTET_STREAM, headers=headers)


def request_body(schema: str) -> dict[str, Any]:
    """OpenAPI `requestBody` for a route that reads either form itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}},
                OCTET_STREAM: {
                    "schema": {"type": "string", "format": "binary"},
                    "example": "little-endian float32, T x F row-major",
                },
            },
        }
    }


def binary_response(headers: dict[str, str]) -> dict[str, Any]:
    """The extra media type of a 200 answer that `Accept: application/octet-stream` gets."""
    return {
        "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            name: {"schema": {"type": "string"}, "description": description}
            for name, description in headers.items()
        },
    }
