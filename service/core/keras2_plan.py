"""A Keras 2 file's config and weights as a checked chain of layers, and its runner.

Keras 2 gave some activations other meanings than Keras 3 (`hard_sigmoid` above all), so
a Keras 2 file is planned from its own config with Keras 2's activations, never by
letting Keras 3 reinterpret it.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.activations import KERAS2_ACTIVATIONS
from service.core.arrays import F32
from service.core.keras2_file import MODEL_CLASSES, Keras2File, LayerPath, layers_of
from service.core.plan import (
    INFERENCE_IDENTITY,
    RECURRENT_KINDS,
    Weights,
    assemble,
    bad_input_shape,
    cannot_stream,
    normalization_stage,
    not_chained,
    not_float32,
    recurrent_stage,
    unsupported_recurrent,
)
from service.core.runner import ActivationStage, DenseStage, StreamingRunner
from service.errors import ModelNotStreamable

_OTHER_RECURRENT = ("Bidirectional", "RNN", "ConvLSTM1D", "CuDNNLSTM", "CuDNNGRU")
_PER_STEP = ("Dense", "Activation", "LayerNormalization", "BatchNormalization")


def _check_kind(name: str, kind: str) -> None:
    """Refuse what does not stream from its class name alone, before reading its weights."""
    if kind in _OTHER_RECURRENT:
        raise unsupported_recurrent(name, kind)
    if kind not in (*RECURRENT_KINDS, *_PER_STEP, *INFERENCE_IDENTITY):
        raise cannot_stream(name, kind)


@dataclass(frozen=True)
class Keras2Layer:
    kind: str  # the class name; a TimeDistributed layer appears as the layer it wraps
    name: str
    config: dict[str, Any]
    weights: Weights


@dataclass(frozen=True)
class Keras2Chain:
    input_shape: tuple[int | None, ...]
    layers: list[Keras2Layer]

    @property
    def input_features(self) -> int:
        return int(self.input_shape[-1])  # type: ignore[arg-type]


def _expected_weights(kind: str, config: dict[str, Any]) -> list[str]:
    bias = ["bias"] if config.get("use_bias", True) else []
    if kind in RECURRENT_KINDS:
        return ["kernel", "recurrent_kernel", *bias]
    if kind == "Dense":
        return ["kernel", *bias]
    scale = ["gamma"] if config.get("scale", True) else []
    center = ["beta"] if config.get("center", True) else []
    if kind == "BatchNormalization":
        return [*scale, *center, "moving_mean", "moving_variance"]
    if kind == "LayerNormalization":
        return [*scale, *center]
    return []


def _named_weights(kind: str, name: str, config: dict[str, Any], stored: Any) -> Weights:
    expected = _expected_weights(kind, config)
    # h5 files name each weight; `.keras` files store them in the layer's creation order.
    names = [
        short if short is not None else (expected[i] if i < len(expected) else f"#{i}")
        for i, (short, _) in enumerate(stored)
    ]
    if sorted(names) != sorted(expected):
        raise ModelNotStreamable(
            f"layer '{name}' ({kind}) stores weights {names}; expected {expected}"
        )
    arrays = (np.asarray(array, dtype=F32) for _, array in stored)
    return dict(zip(names, arrays, strict=True))


def _as_list(value: Any) -> list[Any]:
    """Input/output layer lists: `[[name, 0, 0]]`, or one `[name, 0, 0]` in older files."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [value]
    return list(value or [])


def _inbound(layer: dict[str, Any]) -> list[Any]:
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise ModelNotStreamable(
            f"layer '{layer['config'].get('name')}' is used more than once; only a chain of "
            "layers streams"
        )
    return list(nodes[0]) if nodes else []


def _check_functional(config: dict[str, Any]) -> None:
    inner = config["config"]
    inputs, outputs = _as_list(inner.get("input_layers")), _as_list(inner.get("output_layers"))
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelNotStreamable(
            f"model has {len(inputs)} inputs and {len(outputs)} outputs; "
            "a streamable model has one of each"
        )
    previous = inputs[0][0]
    for layer in layers_of(config):
        name, kind = layer["config"].get("name"), layer.get("class_name", "")
        if kind == "InputLayer":
            continue
        tensors = _inbound(layer)
        extra = tensors[0][3] if len(tensors) == 1 and len(tensors[0]) > 3 else {}
        if (
            len(tensors) != 1
            or tensors[0][0] != previous
            or tuple(tensors[0][1:3]) != (0, 0)
            or set(extra or {}) - {"training"}
        ):
            raise not_chained(name, kind)
        previous = name
    if outputs[0][0] != previous:
        raise ModelNotStreamable(
            f"the model's output is not its last layer '{previous}'; only a chain streams"
        )


def _input_shape(config: dict[str, Any]) -> tuple[int | None, ...]:
    for layer in layers_of(config):
        layer_config = layer.get("config", {})
        for key in ("batch_input_shape", "batch_shape"):
            if isinstance(layer_config.get(key), list):
                return tuple(layer_config[key])
        if layer.get("class_name") in MODEL_CLASSES:
            return _input_shape(layer)
    raise ModelNotStreamable("the model's config does not say its input shape")


def _leaf_layers(config: dict[str, Any], prefix: LayerPath) -> Iterator[tuple[LayerPath, Any]]:
    if config.get("class_name") != "Sequential":
        _check_functional(config)
    for layer in layers_of(config):
        kind = layer.get("class_name")
        path = (*prefix, layer["config"].get("name", ""))
        if kind in MODEL_CLASSES:
            yield from _leaf_layers(layer, path)
        elif kind != "InputLayer":
            yield path, layer


def _dtype(config: dict[str, Any]) -> str:
    dtype = config.get("dtype") or "float32"
    if isinstance(dtype, dict):  # a mixed-precision Policy
        dtype = dtype.get("config", {}).get("name", "float32")
    return str(dtype)


def read_chain(file: Keras2File) -> Keras2Chain:
    """The file's layers in order, nested models and TimeDistributed unwrapped."""
    config = file.config
    if config.get("class_name") not in MODEL_CLASSES:
        raise ModelNotStreamable(
            f"{file.path.name} holds a {config.get('class_name')}, not a model"
        )
    shape = _input_shape(config)
    if len(shape) != 3 or shape[-1] is None:
        raise bad_input_shape(shape)
    layers = []
    for path, layer in _leaf_layers(config, ()):
        kind, layer_config = layer.get("class_name", ""), layer.get("config", {})
        name = layer_config.get("name", path[-1])
        if kind == "TimeDistributed":
            inner = layer_config.get("layer", {})
            kind, layer_config = inner.get("class_name", ""), inner.get("config", {})
        _check_kind(name, kind)
        if _dtype(layer_config) != "float32":
            raise not_float32(name, _dtype(layer_config))
        weights = _named_weights(kind, name, layer_config, file.weights.get(path, []))
        layers.append(Keras2Layer(kind, name, layer_config, weights))
    return Keras2Chain(shape, layers)


def _activation(layer: Keras2Layer, key: str) -> int:
    value = layer.config.get(key, "linear")
    if isinstance(value, dict) and value.get("class_name") == "function":
        value = value.get("config")  # how `.keras` files name a built-in function
    if value is None:
        value = "linear"
    if isinstance(value, str) and value in KERAS2_ACTIVATIONS:
        return KERAS2_ACTIVATIONS[value]
    raise ModelNotStreamable(
        f"layer '{layer.name}' ({layer.kind}) uses activation {value!r}, which is not one of "
        "Keras 2's built-in activations"
    )


def _stage(layer: Keras2Layer, features: int) -> Any:
    kind, config = layer.kind, layer.config
    if kind in RECURRENT_KINDS:
        for flag in ("time_major", "return_state"):
            if config.get(flag):
                raise ModelNotStreamable(f"layer '{layer.name}' ({kind}) has {flag}=True")
        return recurrent_stage(
            kind,
            layer.name,
            layer.weights,
            _activation(layer, "activation"),
            _activation(layer, "recurrent_activation"),
            bool(config.get("return_sequences", False)),
            go_backwards=bool(config.get("go_backwards", False)),
            reset_after=bool(config.get("reset_after", False)),
        )
    if kind in INFERENCE_IDENTITY:
        return None
    if kind == "Dense":
        w = layer.weights
        return DenseStage(w["kernel"], w.get("bias"), _activation(layer, "activation"))
    if kind == "Activation":
        return ActivationStage(_activation(layer, "activation"), features)
    if kind in ("LayerNormalization", "BatchNormalization"):
        return normalization_stage(
            layer.name,
            kind,
            config.get("axis", -1),
            layer.weights,
            float(config.get("epsilon", 1e-3)),
            features,
        )
    raise cannot_stream(layer.name, kind)


def _stages(chain: Keras2Chain) -> Iterable[tuple[str, Any]]:
    features = chain.input_features
    for layer in chain.layers:
        stage = _stage(layer, features)
        kernel = getattr(stage, "kernel", None)
        if kernel is not None and kernel.shape[0] != features:
            raise ModelNotStreamable(
                f"layer '{layer.name}' has a kernel for {kernel.shape[0]} features "
                f"but receives {features}"
            )
        if stage is not None:
            features = stage.output_features
        yield layer.name, stage


def build_keras2_runner(chain: Keras2Chain) -> StreamingRunner:
    return assemble(_stages(chain), chain.input_features)
