"""Open Inference Protocol (KServe V2) request and response bodies, JSON and binary.

Binary tensor data follows Triton's extension: the body is a JSON header of
`Inference-Header-Content-Length` bytes, then each binary tensor's raw little-endian
bytes in order, sized by the tensor's `binary_data_size` parameter.
"""

import json
import re
import zlib
from dataclasses import dataclass
from math import prod
from typing import Any

import msgspec
import numpy as np

from service.api.tensor_json import values_json
from service.core.arrays import Floats
from service.core.sequences import InferRequest, SequenceId
from service.errors import InvalidInput, PayloadTooLarge

FP32 = "FP32"
HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_SEQUENCE_ID = 2**64 - 1
MAX_SEQUENCE_ID_CHARS = 128
_DIGITS = re.compile(r"[0-9]{1,19}")
_DECOMPRESS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: list[int]  # -1: any size
    dims: str  # what the dimensions mean, for messages

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": FP32, "shape": self.shape}


def decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body without its Content-Encoding, refused once it would exceed `max_bytes`."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    wbits = _DECOMPRESS.get(encoding.strip().lower())
    if wbits is None:
        raise InvalidInput(f"Content-Encoding '{encoding}' is not supported: use gzip or deflate")
    inflater = zlib.decompressobj(wbits)
    try:
        plain = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid {encoding} data: {exc}") from exc
    if len(plain) > max_bytes:
        raise PayloadTooLarge(max_bytes, " once decompressed")
    # zlib checks the CRC only when it reaches the end: a cut stream must not pass.
    if not inflater.eof:
        raise InvalidInput(f"the body is not valid {encoding} data: the stream is truncated")
    if inflater.unused_data:
        raise InvalidInput(
            f"the body is not valid {encoding} data: {len(inflater.unused_data)} bytes follow "
            "the end of the stream"
        )
    return plain


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def _flag(parameters: dict[str, Any], name: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameter {name} must be true or false, not {json.dumps(value)}")
    return value


def _sequence_id(parameters: dict[str, Any]) -> SequenceId | None:
    value = parameters.get("sequence_id")
    if value is None or value == 0 or value == "":
        return None  # Triton's "not part of a sequence"
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_SEQUENCE_ID:
        return value
    if isinstance(value, str) and len(value) <= MAX_SEQUENCE_ID_CHARS:
        return value
    raise InvalidInput(
        "parameter sequence_id must be an unsigned 64-bit integer or a string of at most "
        f"{MAX_SEQUENCE_ID_CHARS} characters, not {json.dumps(value)[:80]}"
    )


def _offset(parameters: dict[str, Any]) -> int | None:
    value = parameters.get("sequence_offset")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise InvalidInput(
        f"parameter sequence_offset must be a non-negative integer, not {json.dumps(value)}"
    )


def refuse_unsupported(parameters: dict[str, Any], where: str) -> None:
    for name in ("shared_memory_region", "classification"):
        if name in parameters:
            raise InvalidInput(f"{where}: parameter {name} is not supported by this server")


def check_shape(shape: Any, spec: TensorSpec) -> list[int]:
    if not (
        isinstance(shape, list)
        and len(shape) == len(spec.shape)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidInput(
            f"input '{spec.name}' has shape {json.dumps(shape)}; the model takes "
            f"{spec.shape} ({spec.dims}, -1: any size)"
        )
    for got, want in zip(shape, spec.shape, strict=True):
        if want != -1 and got != want:
            raise InvalidInput(
                f"input '{spec.name}' has shape {shape}; the model takes {spec.shape} "
                f"({spec.dims}, -1: any size)"
            )
    return shape


def _json_data(data: Any, shape: list[int], name: str) -> Floats:
    if not isinstance(data, list):
        raise InvalidInput(f"input '{name}' needs its values in 'data' or as binary data")
    try:
        array = np.asarray(data)
    except ValueError as exc:
        raise InvalidInput(f"input '{name}' data is ragged: {exc}") from exc
    if array.dtype.kind not in "iuf" and array.size:
        raise InvalidInput(f"input '{name}' data must be numbers")
    if array.size != prod(shape):
        raise InvalidInput(
            f"input '{name}' has {array.size} values in 'data'; shape {shape} needs {prod(shape)}"
        )
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused as non-finite
        return array.astype(np.float32).reshape(shape)


def _binary_data(size: Any, binary: memoryview, shape: list[int], name: str) -> Floats:
    needed = prod(shape) * 4
    if not isinstance(size, int) or isinstance(size, bool) or size != needed:
        raise InvalidInput(
            f"input '{name}' has binary_data_size {json.dumps(size)}; shape {shape} of "
            f"{FP32} needs {needed} bytes"
        )
    if len(binary) < size:
        raise InvalidInput(
            f"input '{name}' declares {size} bytes of binary data; the body holds {len(binary)}"
        )
    return np.frombuffer(binary[:size], dtype="<f4").astype(np.float32).reshape(shape)


def _input(tensor: Any, spec: TensorSpec, binary: memoryview) -> tuple[Floats, int]:
    """The input as float32 and how many bytes of binary data it took."""
    if not isinstance(tensor, dict):
        raise InvalidInput("each entry of 'inputs' must be a JSON object")
    if tensor.get("name") != spec.name:
        raise InvalidInput(
            f"unknown input {json.dumps(tensor.get('name'))}: the model takes one input, "
            f"'{spec.name}'"
        )
    if tensor.get("datatype") != FP32:
        raise InvalidInput(
            f"input '{spec.name}' has datatype {json.dumps(tensor.get('datatype'))}; "
            f"the model takes {FP32}"
        )
    shape = check_shape(tensor.get("shape"), spec)
    parameters = _object(tensor.get("parameters"), f"input '{spec.name}' parameters")
    refuse_unsupported(parameters, f"input '{spec.name}'")
    if "binary_data_size" not in parameters:
        return _json_data(tensor.get("data"), shape, spec.name), 0
    if "data" in tensor:
        raise InvalidInput(f"input '{spec.name}' has both 'data' and binary_data_size")
    size = parameters["binary_data_size"]
    return _binary_data(size, binary, shape, spec.name), size


def _binary_output(request: dict[str, Any], parameters: dict[str, Any], spec: TensorSpec) -> bool:
    default = _flag(parameters, "binary_data_output")
    outputs = request.get("outputs") or []
    if not isinstance(outputs, list):
        raise InvalidInput("'outputs' must be a list")
    binary = default
    for output in outputs:
        if not isinstance(output, dict) or output.get("name") != spec.name:
            name = output.get("name") if isinstance(output, dict) else output
            raise InvalidInput(
                f"unknown output {json.dumps(name)}: the model has one output, '{spec.name}'"
            )
        output_parameters = _object(output.get("parameters"), f"output '{spec.name}' parameters")
        refuse_unsupported(output_parameters, f"output '{spec.name}'")
        binary = _flag({"binary_data": default, **output_parameters}, "binary_data")
    return binary


def sequence_fields(parameters: dict[str, Any]) -> dict[str, Any]:
    """`InferRequest`'s sequence fields from the request's parameters (any transport)."""
    sequence_id = _sequence_id(parameters)
    start, end = _flag(parameters, "sequence_start"), _flag(parameters, "sequence_end")
    offset = _offset(parameters)
    if sequence_id is None and (start or end or offset is not None):
        raise InvalidInput("sequence_start, sequence_end and sequence_offset need a sequence_id")
    return {
        "sequence_id": sequence_id,
        "sequence_start": start,
        "sequence_end": end,
        "sequence_offset": offset,
    }


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    # Plain ASCII digits only: str.isdigit() also takes "\u00b2", which int() refuses, and
    # int() refuses more than 4,300 digits; a body length never needs 20.
    text = header_length.strip()
    if not _DIGITS.fullmatch(text) or int(text) > len(body):
        raise InvalidInput(
            f"{HEADER_LENGTH} must be the JSON header's size in bytes, at most the body's "
            f"{len(body)}; got {header_length[:40]!r}"
        )
    size = int(text)
    return body[:size], memoryview(body)[size:]


def _parse_json(header: bytes, header_length: str | None) -> Any:
    try:
        return json.loads(header)
    except (UnicodeDecodeError, ValueError) as exc:
        hint = "" if header_length else f" (binary tensor data needs the {HEADER_LENGTH} header)"
        raise InvalidInput(f"the request is not valid JSON: {exc}{hint}") from exc
    except RecursionError:
        raise InvalidInput("the request's JSON is nested too deeply") from None


def decode_request(
    body: bytes, header_length: str | None, spec: TensorSpec, output: TensorSpec
) -> InferRequest:
    header, binary = _split(body, header_length)
    request = _object(_parse_json(header, header_length), "the request")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    parameters = _object(request.get("parameters"), "parameters")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise InvalidInput(f"'inputs' must list exactly one tensor, '{spec.name}'")
    x, used = _input(inputs[0], spec, binary)
    if used != len(binary):
        raise InvalidInput(
            f"{len(binary)} bytes of binary data follow the JSON header; the inputs "
            f"declare {used} (binary_data_size)"
        )
    return InferRequest(
        id=request_id,
        inputs=x,
        binary_output=_binary_output(request, parameters, output),
        **sequence_fields(parameters),
    )


def encode_response(
    header: dict[str, Any],
    spec: TensorSpec,
    outputs: Floats,
    binary: bool,
    data: msgspec.Raw | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The response body (JSON, or JSON then binary data) and its extra headers. `data`:
    the outputs' values as JSON already (`tensor_json.answer_parts`)."""
    tensor: dict[str, Any] = {"name": spec.name, "datatype": FP32, "shape": list(outputs.shape)}
    raw = b""
    if binary:
        raw = np.ascontiguousarray(outputs, dtype="<f4").tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
    else:
        tensor["data"] = data if data is not None else msgspec.Raw(values_json(outputs.ravel()))
    text = _ENCODER.encode({**header, "outputs": [tensor]})
    if not binary:
        return text, {}
    return text + raw, {HEADER_LENGTH: str(len(text))}
