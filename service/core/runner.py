"""The streaming runner: numpy stages computed one timestep and one row at a time.

Every matrix product is a stack of row-vector products (`x[..., None, :] @ W`), so
each row is computed by the same BLAS call whatever else shares the array. That
makes outputs and state bitwise independent of how a sequence is chunked and of
which sessions are batched together. Arrays fed to BLAS are kept C-contiguous so
the same kernel path is taken on every call.
"""

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from service.core.activations import Activation, Array
from service.core.arrays import F32


def _rowwise_matmul(x: Array, w: Array) -> Array:
    out: Array = np.matmul(np.ascontiguousarray(x)[..., None, :], w)[..., 0, :]
    return out


class Stage(Protocol):
    state_size: int
    output_features: int

    def forward(self, x: Array, state: Array) -> tuple[Array, Array]:
        """x: (B, T, F); state: (B, state_size). Returns (y, new_state)."""
        ...


@dataclass(frozen=True)
class RecurrentLayerInfo:
    name: str
    kind: str
    units: int
    state_names: tuple[str, ...]


@dataclass
class _Recurrent:
    kind: ClassVar[str]
    state_names: ClassVar[tuple[str, ...]]
    name: str
    kernel: Array
    recurrent_kernel: Array
    bias: Array | None
    activation: Activation
    recurrent_activation: Activation
    return_sequences: bool
    units: int = field(init=False)

    def __post_init__(self) -> None:
        self.units = int(self.recurrent_kernel.shape[0])

    @property
    def output_features(self) -> int:
        return self.units

    def _collect(self, outputs: list[Array]) -> Array:
        if self.return_sequences:
            return np.stack(outputs, axis=1)
        return outputs[-1][:, None, :]


class LSTMStage(_Recurrent):
    kind: ClassVar[str] = "LSTM"
    state_names: ClassVar[tuple[str, ...]] = ("h", "c")

    @property
    def state_size(self) -> int:
        return 2 * self.units

    def forward(self, x: Array, state: Array) -> tuple[Array, Array]:
        u = self.units
        projected = _rowwise_matmul(x, self.kernel)
        h = np.ascontiguousarray(state[:, :u])
        c = np.ascontiguousarray(state[:, u:])
        outputs = []
        for t in range(x.shape[1]):
            z = projected[:, t] + _rowwise_matmul(h, self.recurrent_kernel)
            if self.bias is not None:
                z = z + self.bias
            i = self.recurrent_activation(z[:, :u])
            f = self.recurrent_activation(z[:, u : 2 * u])
            c = f * c + i * self.activation(z[:, 2 * u : 3 * u])
            o = self.recurrent_activation(z[:, 3 * u :])
            h = o * self.activation(c)
            outputs.append(h)
        return self._collect(outputs), np.concatenate([h, c], axis=1)


@dataclass
class GRUStage(_Recurrent):
    reset_after: bool = True
    kind: ClassVar[str] = "GRU"
    state_names: ClassVar[tuple[str, ...]] = ("h",)

    def __post_init__(self) -> None:
        super().__post_init__()
        u = self.units
        rk = self.recurrent_kernel
        self._rk_gates = np.ascontiguousarray(rk[:, : 2 * u])
        self._rk_candidate = np.ascontiguousarray(rk[:, 2 * u :])
        self._input_bias: Array | None = None
        self._recurrent_bias: Array | None = None
        if self.bias is not None:
            if self.reset_after:
                self._input_bias, self._recurrent_bias = self.bias[0], self.bias[1]
            else:
                self._input_bias = self.bias

    @property
    def state_size(self) -> int:
        return self.units

    def forward(self, x: Array, state: Array) -> tuple[Array, Array]:
        u = self.units
        projected = _rowwise_matmul(x, self.kernel)
        if self._input_bias is not None:
            projected = projected + self._input_bias
        h = np.ascontiguousarray(state)
        outputs = []
        for t in range(x.shape[1]):
            xt = projected[:, t]
            if self.reset_after:
                inner = _rowwise_matmul(h, self.recurrent_kernel)
                if self._recurrent_bias is not None:
                    inner = inner + self._recurrent_bias
            else:
                inner = _rowwise_matmul(h, self._rk_gates)
            z = self.recurrent_activation(xt[:, :u] + inner[:, :u])
            r = self.recurrent_activation(xt[:, u : 2 * u] + inner[:, u : 2 * u])
            if self.reset_after:
                recurrent_h = r * inner[:, 2 * u :]
            else:
                recurrent_h = _rowwise_matmul(r * h, self._rk_candidate)
            candidate = self.activation(xt[:, 2 * u :] + recurrent_h)
            h = z * h + (F32(1.0) - z) * candidate
            outputs.append(h)
        return self._collect(outputs), h


class SimpleRNNStage(_Recurrent):
    kind: ClassVar[str] = "SimpleRNN"
    state_names: ClassVar[tuple[str, ...]] = ("h",)

    @property
    def state_size(self) -> int:
        return self.units

    def forward(self, x: Array, state: Array) -> tuple[Array, Array]:
        projected = _rowwise_matmul(x, self.kernel)
        if self.bias is not None:
            projected = projected + self.bias
        h = np.ascontiguousarray(state)
        outputs = []
        for t in range(x.shape[1]):
            h = self.activation(projected[:, t] + _rowwise_matmul(h, self.recurrent_kernel))
            outputs.append(h)
        return self._collect(outputs), h


@dataclass
class DenseStage:
    kernel: Array
    bias: Array | None
    activation: Activation
    state_size: int = 0

    @property
    def output_features(self) -> int:
        return int(self.kernel.shape[1])

    def forward(self, x: Array, state: Array) -> tuple[Array, Array]:
        y = _rowwise_matmul(x, self.kernel)
        if self.bias is not None:
            y = y + self.bias
        return self.activation(y), state


@dataclass
class ActivationStage:
    activation: Activation
    output_features: int
    state_size: int = 0

    def forward(self, x: Array, state: Array) -> tuple[Array, Array]:
        return self.activation(np.ascontiguousarray(x)), state


@dataclass
class NormalizationStage:
    """LayerNormalization (statistics over the last axis) or an inference-time
    BatchNormalization (fixed moving statistics): x * inv + (beta - mean * inv)."""

    gamma: Array | None
    beta: Array | None
    epsilon: float
    output_features: int
    moving_mean: Array | None = None
    moving_variance: Array | None = None
    rms_scaling: bool = False
    state_size: int = 0

    def forward(self, x: Array, state: Array) -> tuple[Array, Array]:
        x = np.ascontiguousarray(x)
        if self.moving_mean is not None and self.moving_variance is not None:
            mean, variance = self.moving_mean, self.moving_variance
        else:
            mean = x.mean(axis=-1, keepdims=True)
            variance = np.square(x - mean).mean(axis=-1, keepdims=True)
        inv = F32(1.0) / np.sqrt(variance + F32(self.epsilon))
        if self.rms_scaling:
            y = x * inv
            return (y * self.gamma if self.gamma is not None else y), state
        if self.gamma is not None:
            inv = inv * self.gamma
        shift = -mean * inv
        if self.beta is not None:
            shift = shift + self.beta
        return x * inv + shift, state


class StreamingRunner:
    """`step(x, state) -> (outputs, new_state)` for one model, as pure numpy."""

    def __init__(self, stages: list[Any], input_features: int) -> None:
        self.stages = stages
        self.input_features = input_features
        self.state_size: int = sum(stage.state_size for stage in stages)
        self.output_features = stages[-1].output_features if stages else input_features
        self.per_step = all(getattr(stage, "return_sequences", True) for stage in stages)
        self.recurrent_layers = [
            RecurrentLayerInfo(stage.name, stage.kind, stage.units, stage.state_names)
            for stage in stages
            if isinstance(stage, _Recurrent)
        ]

    @property
    def state_bytes(self) -> int:
        return int(self.state_size) * 4

    def initial_state(self) -> Array:
        return np.zeros(self.state_size, dtype=F32)

    def step(self, x: Array, state: Array) -> tuple[Array, Array]:
        """x: (T, F) float32; state: (state_size,). Outputs are (T, U), or (U,) when
        the model returns only the last step."""
        outputs, states = self.step_batch(x[None], state[None])
        return outputs[0], states[0]

    def step_batch(self, x: Array, states: Array) -> tuple[Array, Array]:
        """x: (B, T, F); states: (B, state_size). Row b of the result equals
        `step(x[b], states[b])` bit for bit."""
        y = np.ascontiguousarray(x, dtype=F32)
        new_states = []
        offset = 0
        for stage in self.stages:
            own = states[:, offset : offset + stage.state_size]
            y, new_own = stage.forward(y, own)
            if stage.state_size:
                new_states.append(new_own)
            offset += stage.state_size
        out_state = (
            np.concatenate(new_states, axis=1).astype(F32, copy=False)
            if new_states
            else np.zeros((x.shape[0], 0), dtype=F32)
        )
        if not self.per_step:
            return y[:, -1, :], out_state
        return y, out_state
