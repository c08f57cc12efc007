"""The numpy runner the compiled kernels replaced, kept to measure against them
(`python -m bench.runner_backends`): one BLAS row-vector product per row and timestep,
numpy's own `exp`/`tanh`. Same stages, same weights; its bits depend on the CPU.
"""

from typing import Any

import numpy as np

from service.core.activations import ACTIVATIONS, LEGACY_HARD_SIGMOID
from service.core.runner import (
    ActivationStage,
    DenseStage,
    GRUStage,
    LSTMStage,
    NormalizationStage,
    SimpleRNNStage,
    StreamingRunner,
)

Array = np.ndarray[Any, Any]
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


_NUMPY_ACTIVATIONS: dict[str, Any] = {
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
_NUMPY_ACTIVATIONS["glu"] = lambda x: (
    x[..., : x.shape[-1] // 2] * _sigmoid(x[..., x.shape[-1] // 2 :])
)
_NUMPY_ACTIVATIONS["gelu"] = lambda x: x * _sigmoid(_F(1.702) * x)  # close enough to time
_NUMPY_ACTIVATIONS["sparsemax"] = _softmax  # timing stand-in


def _act(code: int) -> Any:
    return _NUMPY_ACTIVATIONS.get(ACTIVATIONS[code], lambda x: x)


def _rowwise_matmul(x: Array, w: Array) -> Array:
    out: Array = np.matmul(np.ascontiguousarray(x)[..., None, :], w)[..., 0, :]
    return out


def _collect(stage: Any, outputs: list[Array]) -> Array:
    if stage.return_sequences:
        return np.stack(outputs, axis=1)
    return outputs[-1][:, None, :]


def _lstm(stage: LSTMStage, x: Array, state: Array) -> tuple[Array, Array]:
    u, act, rec = stage.units, _act(stage.activation), _act(stage.recurrent_activation)
    projected = _rowwise_matmul(x, stage.kernel)
    h = np.ascontiguousarray(state[:, :u])
    c = np.ascontiguousarray(state[:, u:])
    outputs = []
    for t in range(x.shape[1]):
        z = projected[:, t] + _rowwise_matmul(h, stage.recurrent_kernel)
        if stage.bias is not None:
            z = z + stage.bias
        i = rec(z[:, :u])
        f = rec(z[:, u : 2 * u])
        c = f * c + i * act(z[:, 2 * u : 3 * u])
        o = rec(z[:, 3 * u :])
        h = o * act(c)
        outputs.append(h)
    return _collect(stage, outputs), np.concatenate([h, c], axis=1)


def _gru(stage: GRUStage, x: Array, state: Array) -> tuple[Array, Array]:
    u, act, rec = stage.units, _act(stage.activation), _act(stage.recurrent_activation)
    projected = _rowwise_matmul(x, stage.kernel) + stage._input_bias
    h = np.ascontiguousarray(state)
    outputs = []
    for t in range(x.shape[1]):
        xt = projected[:, t]
        if stage.reset_after:
            inner = _rowwise_matmul(h, stage.recurrent_kernel) + stage._recurrent_bias
        else:
            inner = _rowwise_matmul(h, stage._gates_kernel)
        z = rec(xt[:, :u] + inner[:, :u])
        r = rec(xt[:, u : 2 * u] + inner[:, u : 2 * u])
        if stage.reset_after:
            recurrent_h = r * inner[:, 2 * u :]
        else:
            recurrent_h = _rowwise_matmul(r * h, stage._candidate_kernel)
        candidate = act(xt[:, 2 * u :] + recurrent_h)
        h = z * h + (_F(1.0) - z) * candidate
        outputs.append(h)
    return _collect(stage, outputs), h


def _simple_rnn(stage: SimpleRNNStage, x: Array, state: Array) -> tuple[Array, Array]:
    act = _act(stage.activation)
    projected = _rowwise_matmul(x, stage.kernel)
    if stage.bias is not None:
        projected = projected + stage.bias
    h = np.ascontiguousarray(state)
    outputs = []
    for t in range(x.shape[1]):
        h = act(projected[:, t] + _rowwise_matmul(h, stage.recurrent_kernel))
        outputs.append(h)
    return _collect(stage, outputs), h


def _normalize(stage: NormalizationStage, x: Array) -> Array:
    if stage.moving_mean is not None and stage.moving_variance is not None:
        mean, variance = stage.moving_mean, stage.moving_variance
    else:
        mean = x.mean(axis=-1, keepdims=True)
        variance = np.square(x - mean).mean(axis=-1, keepdims=True)
    inv = _F(1.0) / np.sqrt(variance + _F(stage.epsilon)) * stage._gamma
    out: Array = x * inv + (stage._beta - mean * inv)
    return out


def _forward(stage: Any, x: Array, state: Array) -> tuple[Array, Array]:
    if isinstance(stage, LSTMStage):
        return _lstm(stage, x, state)
    if isinstance(stage, GRUStage):
        return _gru(stage, x, state)
    if isinstance(stage, SimpleRNNStage):
        return _simple_rnn(stage, x, state)
    if isinstance(stage, DenseStage):
        y = _rowwise_matmul(x, stage.kernel) + stage._bias
        return _act(stage.activation)(y), state
    if isinstance(stage, ActivationStage):
        return _act(stage.activation)(np.ascontiguousarray(x)), state
    return _normalize(stage, np.ascontiguousarray(x)), state


class NumpyRunner:
    """`step`/`step_batch` of a compiled runner's stages, computed the old numpy way."""

    def __init__(self, runner: StreamingRunner) -> None:
        self.runner = runner

    def step(self, x: Array, state: Array) -> tuple[Array, Array]:
        outputs, states = self.step_batch(x[None], state[None])
        return outputs[0], states[0]

    def step_batch(self, x: Array, states: Array) -> tuple[Array, Array]:
        y = np.ascontiguousarray(x, dtype=_F)
        new_states, offset = [], 0
        for stage in self.runner.stages:
            own = states[:, offset : offset + stage.state_size]
            y, new_own = _forward(stage, y, own)
            if stage.state_size:
                new_states.append(new_own)
            offset += stage.state_size
        out_state = np.concatenate(new_states, axis=1) if new_states else states[:, :0]
        return (y if self.runner.per_step else y[:, -1, :]), out_state
