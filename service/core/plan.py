"""Turns a loaded Keras model into runner stages, or says which layer cannot stream.

The stage builders and refusals here are shared with `keras2_plan`, which reads Keras 2
files without Keras: both kinds of file give the same stages and the same messages.
"""

from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from service.core.activations import activation_code
from service.core.arrays import F32
from service.core.runner import (
    ActivationStage,
    DenseStage,
    GRUStage,
    LSTMStage,
    NormalizationStage,
    SimpleRNNStage,
    StreamingRunner,
)
from service.errors import ModelNotStreamable

Weights = dict[str, np.ndarray[Any, Any]]

# Layers that are the identity at inference time.
INFERENCE_IDENTITY = (
    "Dropout",
    "SpatialDropout1D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
)
RECURRENT_KINDS = ("LSTM", "GRU", "SimpleRNN")


def cannot_stream(name: str, kind: str) -> ModelNotStreamable:
    return ModelNotStreamable(
        f"layer '{name}' ({kind}) is not a unidirectional recurrent layer or a "
        "per-timestep layer, so its output at step t may depend on other steps; "
        "it cannot be streamed"
    )


def unsupported_recurrent(name: str, kind: str) -> ModelNotStreamable:
    reason = (
        "a bidirectional layer reads the sequence backwards from its end"
        if kind == "Bidirectional"
        else "only LSTM, GRU and SimpleRNN recurrent layers stream"
    )
    return ModelNotStreamable(f"layer '{name}' ({kind}) is not supported: {reason}")


def not_chained(name: str, kind: str) -> ModelNotStreamable:
    return ModelNotStreamable(
        f"layer '{name}' ({kind}) does not take the previous layer's output; only a single "
        "chain of layers streams"
    )


def not_float32(name: str, dtype: str) -> ModelNotStreamable:
    return ModelNotStreamable(f"layer '{name}' computes in {dtype}; only float32 is served")


def bad_input_shape(shape: Any) -> ModelNotStreamable:
    return ModelNotStreamable(
        f"model input has shape {shape}; a streamable model takes (batch, time, features)"
    )


def recurrent_stage(
    kind: str,
    name: str,
    weights: Weights,
    activation: int,
    recurrent_activation: int,
    return_sequences: bool,
    go_backwards: bool = False,
    reset_after: bool = True,
) -> Any:
    if go_backwards:
        raise ModelNotStreamable(
            f"layer '{name}' ({kind}) has go_backwards=True: it reads "
            "the sequence from its end, which a stream does not have yet"
        )
    common: dict[str, Any] = {
        "name": name,
        "kernel": weights["kernel"],
        "recurrent_kernel": weights["recurrent_kernel"],
        "bias": weights.get("bias"),
        "activation": activation,
        "return_sequences": return_sequences,
    }
    if kind == "LSTM":
        return LSTMStage(**common, recurrent_activation=recurrent_activation)
    if kind == "GRU":
        return GRUStage(
            **common, recurrent_activation=recurrent_activation, reset_after=reset_after
        )
    return SimpleRNNStage(**common, recurrent_activation=activation_code(None))


def normalization_stage(
    name: str,
    kind: str,
    axis: Any,
    weights: Weights,
    epsilon: float,
    features: int,
    rms_scaling: bool = False,
) -> NormalizationStage:
    if axis not in (-1, [-1], 2, [2]):
        raise ModelNotStreamable(
            f"layer '{name}' ({kind}) normalizes over axis {axis}; only the "
            "feature axis (-1) stays within one timestep"
        )
    batch_norm = kind == "BatchNormalization"
    return NormalizationStage(
        gamma=weights.get("gamma"),
        beta=weights.get("beta"),
        epsilon=epsilon,
        output_features=features,
        moving_mean=weights.get("moving_mean") if batch_norm else None,
        moving_variance=weights.get("moving_variance") if batch_norm else None,
        rms_scaling=rms_scaling,
    )


def assemble(named_stages: Iterable[tuple[str, Any]], input_features: int) -> StreamingRunner:
    """A runner from each layer's stage (None for identities), checking that only
    per-timestep layers follow a recurrent layer that returns its last step alone (Keras
    refuses to build anything else, but a Keras 2 file is read from its config, which can
    say anything)."""
    stages: list[Any] = []
    final_step_only = False
    for name, stage in named_stages:
        if stage is None:
            continue
        recurrent = hasattr(stage, "recurrent_kernel")
        if recurrent and final_step_only:
            raise ModelNotStreamable(
                f"layer '{name}' follows a recurrent layer with "
                "return_sequences=False; only per-timestep layers may follow it"
            )
        if recurrent:
            final_step_only = not stage.return_sequences
        stages.append(stage)
    if not any(hasattr(stage, "recurrent_kernel") for stage in stages):
        raise ModelNotStreamable("model has no recurrent layer; there is no state to stream")
    return StreamingRunner(stages, input_features)


def _weights(layer: Any) -> Weights:
    return {w.path.split("/")[-1]: np.asarray(w.numpy(), dtype=F32) for w in layer.weights}


def _flatten(model: Any) -> list[Any]:
    layers: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            layers.extend(_flatten(layer))
        else:
            layers.append(layer)
    return layers


def _check_chain(model: Any) -> None:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelNotStreamable(
            f"model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "a streamable model has one of each"
        )
    if isinstance(model, keras.Sequential):
        return
    previous = model.inputs[0]
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            layer_input, layer_output = layer.input, layer.output
        except (AttributeError, ValueError) as exc:
            raise ModelNotStreamable(
                f"layer '{layer.name}' is used more than once; only a chain of layers streams"
            ) from exc
        if layer_input is not previous:
            raise not_chained(layer.name, type(layer).__name__)
        previous = layer_output


def _recurrent_stage(layer: Any) -> Any:
    cell = layer.cell
    return recurrent_stage(
        type(layer).__name__,
        layer.name,
        _weights(cell),
        activation_code(cell.activation, layer.name),
        activation_code(getattr(cell, "recurrent_activation", None), layer.name),
        bool(layer.return_sequences),
        go_backwards=bool(layer.go_backwards),
        reset_after=bool(getattr(cell, "reset_after", True)),
    )


def _per_step_stage(layer: Any, features: int) -> Any | None:
    """A stage for a layer that acts on each timestep alone; None for identities."""
    kind = type(layer).__name__
    if isinstance(layer, keras.layers.TimeDistributed):
        return _per_step_stage(layer.layer, features)
    if kind in INFERENCE_IDENTITY:
        return None
    if isinstance(layer, keras.layers.Dense):
        if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
            raise ModelNotStreamable(f"layer '{layer.name}' (Dense) is quantized or uses LoRA")
        w = _weights(layer)
        return DenseStage(w["kernel"], w.get("bias"), activation_code(layer.activation, layer.name))
    if isinstance(layer, keras.layers.Activation):
        return ActivationStage(activation_code(layer.activation, layer.name), features)
    if isinstance(layer, keras.layers.LayerNormalization | keras.layers.BatchNormalization):
        axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)
        return normalization_stage(
            layer.name,
            kind,
            axis,
            _weights(layer),
            float(layer.epsilon),
            features,
            rms_scaling=bool(getattr(layer, "rms_scaling", False)),
        )
    raise cannot_stream(layer.name, kind)


def _stages(model: Any, features: int) -> Iterable[tuple[str, Any]]:
    for layer in _flatten(model):
        policy = getattr(layer, "dtype_policy", None)
        compute_dtype = getattr(policy, "compute_dtype", "float32")
        if compute_dtype != "float32":
            raise not_float32(layer.name, compute_dtype)
        if isinstance(layer, keras.layers.LSTM | keras.layers.GRU | keras.layers.SimpleRNN):
            stage = _recurrent_stage(layer)
        elif isinstance(layer, keras.layers.RNN | keras.layers.Bidirectional):
            raise unsupported_recurrent(layer.name, type(layer).__name__)
        else:
            stage = _per_step_stage(layer, features)
        if stage is not None:
            features = stage.output_features
        yield layer.name, stage


def build_runner(model: Any) -> StreamingRunner:
    """Stages for `model`, checked to form a streamable chain."""
    _check_chain(model)
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 3 or shape[-1] is None:
        raise bad_input_shape(shape)
    return assemble(_stages(model, int(shape[-1])), int(shape[-1]))
