"""Activations in numpy, matched to Keras's own functions.

Each is elementwise (or acts on the last axis only), so a row's result never
depends on which other rows share the array. Activations without a numpy twin
here fall back to calling the Keras function one row at a time.
"""

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

Array = np.ndarray[Any, Any]  # float32 throughout
Activation = Callable[[Array], Array]

LEGACY_HARD_SIGMOID = "legacy_hard_sigmoid"


def _legacy_hard_sigmoid(x: Any) -> Any:
    """Keras 2's hard sigmoid, clip(0.2x + 0.5, 0, 1), kept so old models keep their numbers."""
    return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)


legacy_hard_sigmoid: Callable[[Any], Any] = keras.saving.register_keras_serializable(
    package="lstm_stream", name=LEGACY_HARD_SIGMOID
)(_legacy_hard_sigmoid)


_F = np.float32


def _sigmoid(x: Array) -> Array:
    # 0.5 * (1 + tanh(x / 2)) never overflows, unlike 1 / (1 + exp(-x)).
    out: Array = _F(0.5) * (_F(1.0) + np.tanh(_F(0.5) * x))
    return out


def _softplus(x: Array) -> Array:
    return np.logaddexp(_F(0.0), x)


def _elu(x: Array) -> Array:
    return np.where(x > 0, x, np.expm1(np.minimum(x, _F(0.0))))


def _selu(x: Array) -> Array:
    alpha, scale = _F(1.6732632423543772), _F(1.0507009873554805)
    return scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, _F(0.0))))


def _softmax(x: Array) -> Array:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    out: Array = e / e.sum(axis=-1, keepdims=True)
    return out


def _log_softmax(x: Array) -> Array:
    shifted = x - x.max(axis=-1, keepdims=True)
    out: Array = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return out


_NUMPY_ACTIVATIONS: dict[str, Activation] = {
    "linear": lambda x: x,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "hard_sigmoid": lambda x: np.clip(x + _F(3.0), _F(0.0), _F(6.0)) / _F(6.0),
    LEGACY_HARD_SIGMOID: lambda x: np.clip(_F(0.2) * x + _F(0.5), _F(0.0), _F(1.0)),
    "relu": lambda x: np.maximum(x, _F(0.0)),
    "relu6": lambda x: np.clip(x, _F(0.0), _F(6.0)),
    "leaky_relu": lambda x: np.where(x >= 0, x, _F(0.2) * x),
    "elu": _elu,
    "selu": _selu,
    "softplus": _softplus,
    "softsign": lambda x: x / (_F(1.0) + np.abs(x)),
    "exponential": np.exp,
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "hard_silu": lambda x: x * np.clip(x + _F(3.0), _F(0.0), _F(6.0)) / _F(6.0),
    "hard_swish": lambda x: x * np.clip(x + _F(3.0), _F(0.0), _F(6.0)) / _F(6.0),
    "hard_tanh": lambda x: np.clip(x, _F(-1.0), _F(1.0)),
    "tanh_shrink": lambda x: x - np.tanh(x),
    "log_sigmoid": lambda x: -_softplus(-x),
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "softmax": _softmax,
    "log_softmax": _log_softmax,
}


def activation_name(fn: Any) -> str:
    """The name Keras serializes an activation under (built-in or registered)."""
    serialized = keras.activations.serialize(fn)
    if isinstance(serialized, str):
        return serialized
    if isinstance(serialized, dict):
        # Registered functions serialize as {"config": "package>name", ...}.
        config = serialized.get("config")
        if isinstance(config, str):
            return config.split(">")[-1]
    return getattr(fn, "__name__", repr(fn))


def _keras_rowwise(fn: Callable[[Any], Any]) -> Activation:
    def apply(x: Array) -> Array:
        rows = x.reshape(-1, x.shape[-1])
        out = np.stack(
            [np.asarray(keras.ops.convert_to_numpy(fn(row[None, :])), dtype=_F)[0] for row in rows]
        )
        return out.reshape(x.shape)

    return apply


def numpy_activation(fn: Any) -> Activation:
    """The numpy twin of a Keras activation function, or a row-wise call of Keras itself."""
    if fn is None:
        return _NUMPY_ACTIVATIONS["linear"]
    return _NUMPY_ACTIVATIONS.get(activation_name(fn)) or _keras_rowwise(fn)
