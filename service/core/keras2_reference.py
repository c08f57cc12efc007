"""What a Keras 2 model computes, for the load-time probe: `tf_keras` itself when it is
installed, else the Keras 2 formulas written out again in float64 numpy.

The float64 twin shares nothing with the runner but the parsed file: whole-sequence
matrix products, its own activations, and the gate orders Keras 2 documents (LSTM
i, f, c, o; GRU z, r, h).
"""

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from service.core.keras2_plan import Keras2Chain, Keras2Layer
from service.core.probe import keras_reference

F64 = np.float64
NUMPY_REFERENCE = "numpy float64 (Keras 2 formulas)"
Array = np.ndarray[Any, Any]


def _sigmoid(x: Array) -> Array:
    out: Array = 1.0 / (1.0 + np.exp(-x))
    return out


def _softmax(x: Array) -> Array:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    out: Array = e / e.sum(axis=-1, keepdims=True)
    return out


def _elu(x: Array) -> Array:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


_ERF = np.vectorize(math.erf, otypes=[F64])

ACTIVATIONS_F64: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "hard_sigmoid": lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0),
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "elu": _elu,
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * _elu(x)),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "exponential": np.exp,
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
    "mish": lambda x: x * np.tanh(np.logaddexp(0.0, x)),
    "gelu": lambda x: 0.5 * x * (1.0 + _ERF(x / math.sqrt(2.0))),
    "softmax": _softmax,
    "log_softmax": lambda x: np.log(_softmax(x)),
}


def _act(layer: Keras2Layer, key: str) -> Callable[[Array], Array]:
    value = layer.config.get(key) or "linear"
    if isinstance(value, dict):
        value = value.get("config")
    return ACTIVATIONS_F64[str(value)]


def _w(layer: Keras2Layer, name: str) -> Array:
    return layer.weights[name].astype(F64)


def _lstm(layer: Keras2Layer, x: Array) -> Array:
    units = layer.weights["recurrent_kernel"].shape[0]
    act, gate = _act(layer, "activation"), _act(layer, "recurrent_activation")
    bias = _w(layer, "bias") if "bias" in layer.weights else 0.0
    xw = x @ _w(layer, "kernel") + bias
    u = _w(layer, "recurrent_kernel")
    h, c, out = np.zeros(units), np.zeros(units), []
    for t in range(len(x)):
        i, f, g, o = np.split(xw[t] + h @ u, 4)
        c = gate(f) * c + gate(i) * act(g)
        h = gate(o) * act(c)
        out.append(h)
    return np.array(out)


def _gru(layer: Keras2Layer, x: Array) -> Array:
    units = layer.weights["recurrent_kernel"].shape[0]
    act, gate = _act(layer, "activation"), _act(layer, "recurrent_activation")
    kernel, u = _w(layer, "kernel"), _w(layer, "recurrent_kernel")
    bias = _w(layer, "bias") if "bias" in layer.weights else np.zeros((2, 3 * units))
    reset_after = bool(layer.config.get("reset_after", False))
    input_bias, recurrent_bias = (bias[0], bias[1]) if reset_after else (bias, np.zeros(3 * units))
    xw = x @ kernel + input_bias
    h, out = np.zeros(units), []
    for t in range(len(x)):
        xz, xr, xh = np.split(xw[t], 3)
        if reset_after:
            rz, rr, rh = np.split(h @ u + recurrent_bias, 3)
            z, r = gate(xz + rz), gate(xr + rr)
            candidate = act(xh + r * rh)
        else:
            z = gate(xz + h @ u[:, :units])
            r = gate(xr + h @ u[:, units : 2 * units])
            candidate = act(xh + (r * h) @ u[:, 2 * units :])
        h = z * h + (1.0 - z) * candidate
        out.append(h)
    return np.array(out)


def _simple_rnn(layer: Keras2Layer, x: Array) -> Array:
    units = layer.weights["recurrent_kernel"].shape[0]
    act = _act(layer, "activation")
    bias = _w(layer, "bias") if "bias" in layer.weights else 0.0
    xw = x @ _w(layer, "kernel") + bias
    u = _w(layer, "recurrent_kernel")
    h, out = np.zeros(units), []
    for t in range(len(x)):
        h = act(xw[t] + h @ u)
        out.append(h)
    return np.array(out)


def _normalize(layer: Keras2Layer, x: Array) -> Array:
    if layer.kind == "BatchNormalization":
        mean, variance = _w(layer, "moving_mean"), _w(layer, "moving_variance")
    else:
        mean = x.mean(axis=-1, keepdims=True)
        variance = x.var(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(variance + float(layer.config.get("epsilon", 1e-3)))
    if "gamma" in layer.weights:
        y = y * _w(layer, "gamma")
    if "beta" in layer.weights:
        y = y + _w(layer, "beta")
    return y


_RECURRENT = {"LSTM": _lstm, "GRU": _gru, "SimpleRNN": _simple_rnn}


def numpy_reference(chain: Keras2Chain, inputs: Array) -> Array:
    """The model's output for one (T, F) sequence from zero state, in float64."""
    y = np.asarray(inputs, dtype=F64)
    last_step_only = False
    for layer in chain.layers:
        if layer.kind in _RECURRENT:
            y = _RECURRENT[layer.kind](layer, y)
            if not layer.config.get("return_sequences", False):
                y, last_step_only = y[-1:], True
        elif layer.kind == "Dense":
            bias = _w(layer, "bias") if "bias" in layer.weights else 0.0
            y = _act(layer, "activation")(y @ _w(layer, "kernel") + bias)
        elif layer.kind == "Activation":
            y = _act(layer, "activation")(y)
        elif layer.kind in ("LayerNormalization", "BatchNormalization"):
            y = _normalize(layer, y)
    return y[0] if last_step_only else y


def tf_keras_reference(path: Path, inputs: Array) -> tuple[Array, str] | None:
    """`tf_keras`'s own predict on the file, or None when `tf_keras` is not installed.
    Call only for a file whose chain was read and checked: every layer and activation
    in it is then a Keras 2 built-in, so loading it runs no code from the file."""
    try:
        import tf_keras
    except ImportError:
        return None
    model = tf_keras.models.load_model(path, compile=False, safe_mode=True)
    return keras_reference(model, inputs), f"tf_keras {tf_keras.__version__}"
