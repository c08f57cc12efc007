"""Keras activations by name, and the codes under which the compiled kernels apply them.

Every Keras built-in activation (with its default arguments, as a layer config names it)
has a code here; `service.core.activation_kernel.activate` computes it from the plain
float32 operations of `service.core.fmath`. An activation without a code cannot be
computed the same way on every CPU, so a model using it is refused at load.
"""

from collections.abc import Callable
from typing import Any

import keras

from service.errors import ModelNotStreamable

LEGACY_HARD_SIGMOID = "legacy_hard_sigmoid"


def _legacy_hard_sigmoid(x: Any) -> Any:
    """Keras 2's hard sigmoid, clip(0.2x + 0.5, 0, 1), kept so old models keep their numbers."""
    return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)


legacy_hard_sigmoid: Callable[[Any], Any] = keras.saving.register_keras_serializable(
    package="lstm_stream", name=LEGACY_HARD_SIGMOID
)(_legacy_hard_sigmoid)

# The position of a name is its code (the constants in activation_kernel.py follow it).
ACTIVATIONS: tuple[str, ...] = (
    "linear",
    "tanh",
    "sigmoid",
    "hard_sigmoid",
    LEGACY_HARD_SIGMOID,
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "selu",
    "celu",
    "gelu",
    "softplus",
    "softsign",
    "exponential",
    "silu",
    "hard_silu",
    "hard_tanh",
    "tanh_shrink",
    "log_sigmoid",
    "mish",
    "hard_shrink",
    "soft_shrink",
    "sparse_plus",
    "sparse_sigmoid",
    "squareplus",
    "softmax",
    "log_softmax",
    "sparsemax",
    "glu",
)
_ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}
CODES = {name: code for code, name in enumerate(ACTIVATIONS)}
GLU = CODES["glu"]


# What each activation name meant to Keras 2 (`tf_keras` 2.21, checked against it), as
# kernel codes: `hard_sigmoid` was clip(0.2x + 0.5, 0, 1), Keras 3's `legacy_hard_sigmoid`;
# `gelu` (exact, erf), `leaky_relu` (slope 0.2) and the others mean what Keras 3's do.
KERAS2_ACTIVATIONS: dict[str, int] = {
    **{
        name: CODES[_ALIASES.get(name, name)]
        for name in (
            "linear",
            "tanh",
            "sigmoid",
            "relu",
            "relu6",
            "leaky_relu",
            "elu",
            "selu",
            "gelu",
            "softplus",
            "softsign",
            "exponential",
            "swish",
            "silu",
            "mish",
            "softmax",
            "log_softmax",
        )
    },
    "hard_sigmoid": CODES[LEGACY_HARD_SIGMOID],
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


def activation_code(fn: Any, layer_name: str = "") -> int:
    """The kernel code of a Keras activation function (None is linear)."""
    if fn is None:
        return CODES["linear"]
    name = activation_name(fn)
    code = CODES.get(_ALIASES.get(name, name))
    if code is None:
        raise ModelNotStreamable(
            f"layer '{layer_name}' uses activation '{name}', which has no kernel computing "
            "it identically on every CPU"
        )
    return code
