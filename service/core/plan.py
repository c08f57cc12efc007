"""Turns a loaded Keras model into runner stages, or says which layer cannot stream."""

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

# Layers that are the identity at inference time.
_INFERENCE_IDENTITY = (
    "Dropout",
    "SpatialDropout1D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
)


def _weights(layer: Any) -> dict[str, np.ndarray[Any, Any]]:
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
            raise ModelNotStreamable(
                f"layer '{layer.name}' ({type(layer).__name__}) does not take the previous "
                "layer's output; only a single chain of layers streams"
            )
        previous = layer_output


def _recurrent_stage(layer: Any) -> Any:
    cell = layer.cell
    if layer.go_backwards:
        raise ModelNotStreamable(
            f"layer '{layer.name}' ({type(layer).__name__}) has go_backwards=True: it reads "
            "the sequence from its end, which a stream does not have yet"
        )
    w = _weights(cell)
    recurrent_activation = activation_code(getattr(cell, "recurrent_activation", None), layer.name)
    common = {
        "name": layer.name,
        "kernel": w["kernel"],
        "recurrent_kernel": w["recurrent_kernel"],
        "bias": w.get("bias"),
        "activation": activation_code(cell.activation, layer.name),
        "return_sequences": bool(layer.return_sequences),
    }
    if isinstance(layer, keras.layers.LSTM):
        return LSTMStage(**common, recurrent_activation=recurrent_activation)
    if isinstance(layer, keras.layers.GRU):
        return GRUStage(
            **common,
            recurrent_activation=recurrent_activation,
            reset_after=bool(cell.reset_after),
        )
    return SimpleRNNStage(**common, recurrent_activation=activation_code(None))


def _per_step_stage(layer: Any, features: int) -> Any | None:
    """A stage for a layer that acts on each timestep alone; None for identities."""
    kind = type(layer).__name__
    if isinstance(layer, keras.layers.TimeDistributed):
        return _per_step_stage(layer.layer, features)
    if kind in _INFERENCE_IDENTITY:
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
        if axis not in (-1, [-1], 2, [2]):
            raise ModelNotStreamable(
                f"layer '{layer.name}' ({kind}) normalizes over axis {axis}; only the "
                "feature axis (-1) stays within one timestep"
            )
        w = _weights(layer)
        batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        return NormalizationStage(
            gamma=w.get("gamma"),
            beta=w.get("beta"),
            epsilon=float(layer.epsilon),
            output_features=features,
            moving_mean=w.get("moving_mean") if batch_norm else None,
            moving_variance=w.get("moving_variance") if batch_norm else None,
            rms_scaling=bool(getattr(layer, "rms_scaling", False)),
        )
    raise ModelNotStreamable(
        f"layer '{layer.name}' ({kind}) is not a unidirectional recurrent layer or a "
        "per-timestep layer, so its output at step t may depend on other steps; "
        "it cannot be streamed"
    )


def build_runner(model: Any) -> StreamingRunner:
    """Stages for `model`, checked to form a streamable chain."""
    _check_chain(model)
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 3 or shape[-1] is None:
        raise ModelNotStreamable(
            f"model input has shape {shape}; a streamable model takes (batch, time, features)"
        )
    features = int(shape[-1])
    stages: list[Any] = []
    for layer in _flatten(model):
        policy = getattr(layer, "dtype_policy", None)
        compute_dtype = getattr(policy, "compute_dtype", "float32")
        if compute_dtype != "float32":
            raise ModelNotStreamable(
                f"layer '{layer.name}' computes in {compute_dtype}; only float32 is served"
            )
        recurrent = isinstance(layer, keras.layers.LSTM | keras.layers.GRU | keras.layers.SimpleRNN)
        if recurrent:
            # No recurrent layer can follow one with return_sequences=False: Keras refuses
            # its 2-D input, and a layer that would make it a sequence again mixes steps.
            stage = _recurrent_stage(layer)
        elif isinstance(layer, keras.layers.RNN | keras.layers.Bidirectional):
            raise ModelNotStreamable(
                f"layer '{layer.name}' ({type(layer).__name__}) is not supported: "
                + (
                    "a bidirectional layer reads the sequence backwards from its end"
                    if isinstance(layer, keras.layers.Bidirectional)
                    else "only LSTM, GRU and SimpleRNN recurrent layers stream"
                )
            )
        else:
            stage = _per_step_stage(layer, features)
            if stage is None:
                continue
        stages.append(stage)
        features = stage.output_features
    if not any(hasattr(stage, "recurrent_kernel") for stage in stages):
        raise ModelNotStreamable("model has no recurrent layer; there is no state to stream")
    return StreamingRunner(stages, int(shape[-1]))
