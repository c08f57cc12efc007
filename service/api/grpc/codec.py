"""`ModelInferRequest` to arrays and back: the gRPC form of the V2 inference call.

Inputs arrive as little-endian bytes in `raw_input_contents` (what `tritonclient.grpc` sends)
or as numbers in `contents.fp32_contents`; outputs always leave as raw bytes, as Triton's.
"""

from math import prod
from typing import Any

import numpy as np
from google.protobuf.internal.containers import MessageMap

from service.api.grpc.triton.grpc_service_pb2 import (
    InferParameter,
    ModelInferRequest,
    ModelInferResponse,
)
from service.api.v2_codec import (
    FP32,
    TensorSpec,
    check_shape,
    refuse_unsupported,
    sequence_fields,
)
from service.core.arrays import Floats
from service.core.models import ServedModel
from service.core.sequences import InferRequest
from service.core.sessions import ChunkResult
from service.errors import InvalidInput

SequenceKey = tuple[str, str, Any]


def parameters_of(parameters: MessageMap[str, InferParameter]) -> dict[str, Any]:
    """Each parameter's value, whichever of its typed fields the client set."""
    found: dict[str, Any] = {}
    for name, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        found[name] = None if kind is None else getattr(parameter, kind)
    return found


def sequence_key(request: ModelInferRequest) -> SequenceKey | None:
    """Which sequence a request continues, as written (checked later), or None."""
    value = parameters_of(request.parameters).get("sequence_id")
    if value is None or value == 0 or value == "":
        return None
    return request.model_name, type(value).__name__, value


def _tensor_data(request: ModelInferRequest, shape: list[int], name: str) -> Floats:
    tensor = request.inputs[0]
    count = prod(shape)
    if request.raw_input_contents:
        if tensor.HasField("contents"):
            raise InvalidInput(f"input '{name}' has both contents and raw_input_contents")
        if len(request.raw_input_contents) != 1:
            raise InvalidInput(
                f"{len(request.raw_input_contents)} raw_input_contents for one input, '{name}'"
            )
        raw = request.raw_input_contents[0]
        if len(raw) != count * 4:
            raise InvalidInput(
                f"input '{name}' has {len(raw)} bytes in raw_input_contents; shape {shape} of "
                f"{FP32} needs {count * 4}"
            )
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
    values = tensor.contents.fp32_contents
    if len(values) != count:
        raise InvalidInput(
            f"input '{name}' has {len(values)} values in contents.fp32_contents; shape "
            f"{shape} needs {count} (or send them as raw_input_contents)"
        )
    return np.array(values, dtype=np.float32).reshape(shape)


def _check_outputs(request: ModelInferRequest, spec: TensorSpec) -> None:
    for output in request.outputs:
        if output.name != spec.name:
            raise InvalidInput(
                f"unknown output '{output.name}': the model has one output, '{spec.name}'"
            )
        refuse_unsupported(parameters_of(output.parameters), f"output '{spec.name}'")


def decode_infer(request: ModelInferRequest, spec: TensorSpec, output: TensorSpec) -> InferRequest:
    if len(request.inputs) != 1:
        raise InvalidInput(f"'inputs' must list exactly one tensor, '{spec.name}'")
    tensor = request.inputs[0]
    if tensor.name != spec.name:
        raise InvalidInput(
            f"unknown input '{tensor.name}': the model takes one input, '{spec.name}'"
        )
    if tensor.datatype != FP32:
        raise InvalidInput(
            f"input '{spec.name}' has datatype '{tensor.datatype}'; the model takes {FP32}"
        )
    refuse_unsupported(parameters_of(tensor.parameters), f"input '{spec.name}'")
    shape = check_shape(list(tensor.shape), spec)
    x = _tensor_data(request, shape, spec.name)
    _check_outputs(request, output)
    return InferRequest(
        id=request.id or None,
        inputs=x,
        binary_output=True,
        **sequence_fields(parameters_of(request.parameters)),
    )


def encode_infer(
    model: ServedModel,
    request_id: str | None,
    spec: TensorSpec,
    outputs: Floats,
    chunk: ChunkResult | None = None,
) -> ModelInferResponse:
    response = ModelInferResponse(
        model_name=model.name, model_version=model.version, id=request_id or ""
    )
    tensor = response.outputs.add()
    tensor.name, tensor.datatype = spec.name, FP32
    tensor.shape.extend(outputs.shape)
    response.raw_output_contents.append(np.ascontiguousarray(outputs, dtype="<f4").tobytes())
    if chunk is not None:
        response.parameters["sequence_offset"].int64_param = chunk.offset
        response.parameters["sequence_steps"].int64_param = chunk.record.steps
        response.parameters["sequence_replayed"].bool_param = chunk.replayed
    return response
