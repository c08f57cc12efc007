"""The load-time probe: a fixed random sequence, the reference's answer, the scaled error."""

import copy
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]
PROBE_SEED = 20240521
# How far the runner may differ from Keras on the probe, as measured by `scaled_error`.
PROBE_TOLERANCE = 1e-5


def stateless_config(config: Any) -> Any:
    """The same config with stateful layers made stateless and batch sizes freed."""
    if isinstance(config, dict):
        out = {key: stateless_config(value) for key, value in config.items()}
        if out.get("stateful") is True:
            out["stateful"] = False
        for key in ("batch_shape", "batch_input_shape"):
            if isinstance(out.get(key), list) and out[key]:
                out[key] = [None, *out[key][1:]]
        if "batch_size" in out and "batch_shape" in out:
            out["batch_size"] = None
        return out
    if isinstance(config, list):
        return [stateless_config(item) for item in config]
    return config


def keras_reference(model: Any, inputs: Array) -> Array:
    """Keras's own `predict` on a stateless twin of `model` (Keras 3 or `tf_keras`), for
    one (T, F) sequence."""
    config = model.get_config()
    free = stateless_config(copy.deepcopy(config))
    twin = model
    if free != config:  # rebuilding is slow: only when a batch size or stateful must go
        twin = model.__class__.from_config(free)
        twin.set_weights(model.get_weights())
    return np.asarray(twin.predict(inputs[None], verbose=0)[0], dtype=np.float32)


def probe_sequence(features: int, steps: int, fixed_steps: int | None) -> Array:
    steps = int(fixed_steps) if fixed_steps is not None else steps
    probe = np.random.default_rng(PROBE_SEED).normal(size=(steps, features))
    return probe.astype(np.float32)


def scaled_error(actual: Array, expected: Array) -> float:
    """Largest difference relative to the magnitude (absolute below 1): float32 rounding
    grows with the value, and which last bits differ depends on the CPU's kernels."""
    scale = np.maximum(1.0, np.abs(expected))
    return float(np.max(np.abs(actual - expected) / scale))
