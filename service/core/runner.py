"""The streaming runner: compiled kernels computing each session row on its own.

Each stage holds one layer's float32 weights (C-contiguous, as the kernels are compiled
for) and the codes of its activations, and calls one kernel of `service.core.kernels`
per batch. The kernels fix the order of every float32 operation and use no BLAS and no
libm, so outputs and state are bitwise independent of chunking, of the sessions batched
together and of the CPU.
"""

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from service.core import kernels
from service.core.activations import GLU
from service.core.arrays import F32, Floats
from service.core.kernel_cache import compile_kernels


def _c(array: Floats) -> Floats:
    return np.ascontiguousarray(array, dtype=F32)


def _or_zeros(array: Floats | None, size: int) -> Floats:
    return _c(array) if array is not None else np.zeros(size, F32)


class Stage(Protocol):
    state_size: int
    output_features: int

    def forward(self, x: Floats, state: Floats) -> tuple[Floats, Floats]:
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
    kernel: Floats
    recurrent_kernel: Floats
    bias: Floats | None
    activation: int
    recurrent_activation: int
    return_sequences: bool
    units: int = field(init=False)

    def __post_init__(self) -> None:
        self.units = int(self.recurrent_kernel.shape[0])
        self.kernel = _c(self.kernel)
        self.recurrent_kernel = _c(self.recurrent_kernel)
        self._bias = _or_zeros(self.bias, int(self.recurrent_kernel.shape[1]))

    @property
    def output_features(self) -> int:
        return self.units

    @property
    def state_size(self) -> int:
        return self.units * len(self.state_names)


class LSTMStage(_Recurrent):
    kind: ClassVar[str] = "LSTM"
    state_names: ClassVar[tuple[str, ...]] = ("h", "c")

    def forward(self, x: Floats, state: Floats) -> tuple[Floats, Floats]:
        return kernels.lstm(  # type: ignore[no-any-return]
            x,
            _c(state),
            self.kernel,
            self.recurrent_kernel,
            self._bias,
            self.activation,
            self.recurrent_activation,
            self.return_sequences,
        )


@dataclass
class GRUStage(_Recurrent):
    reset_after: bool = True
    kind: ClassVar[str] = "GRU"
    state_names: ClassVar[tuple[str, ...]] = ("h",)

    def __post_init__(self) -> None:
        super().__post_init__()
        u = self.units
        self._gates_kernel = _c(self.recurrent_kernel[:, : 2 * u])
        self._candidate_kernel = _c(self.recurrent_kernel[:, 2 * u :])
        input_bias = recurrent_bias = None
        if self.bias is not None and self.reset_after:
            input_bias, recurrent_bias = self.bias[0], self.bias[1]
        elif self.bias is not None:
            input_bias = self.bias
        self._input_bias = _or_zeros(input_bias, 3 * u)
        self._recurrent_bias = _or_zeros(recurrent_bias, 3 * u)

    def forward(self, x: Floats, state: Floats) -> tuple[Floats, Floats]:
        return kernels.gru(  # type: ignore[no-any-return]
            x,
            _c(state),
            self.kernel,
            self._gates_kernel,
            self._candidate_kernel,
            self._input_bias,
            self._recurrent_bias,
            self.activation,
            self.recurrent_activation,
            self.reset_after,
            self.return_sequences,
        )


class SimpleRNNStage(_Recurrent):
    kind: ClassVar[str] = "SimpleRNN"
    state_names: ClassVar[tuple[str, ...]] = ("h",)

    def forward(self, x: Floats, state: Floats) -> tuple[Floats, Floats]:
        return kernels.simple_rnn(  # type: ignore[no-any-return]
            x,
            _c(state),
            self.kernel,
            self.recurrent_kernel,
            self._bias,
            self.activation,
            self.return_sequences,
        )


def _halved_by_glu(y: Floats, activation: int) -> Floats:
    return _c(y[..., : y.shape[-1] // 2]) if activation == GLU else y


@dataclass
class DenseStage:
    kernel: Floats
    bias: Floats | None
    activation: int
    state_size: int = 0

    def __post_init__(self) -> None:
        self.kernel = _c(self.kernel)
        self._bias = _or_zeros(self.bias, self.kernel.shape[1])

    @property
    def output_features(self) -> int:
        units = int(self.kernel.shape[1])
        return units // 2 if self.activation == GLU else units

    def forward(self, x: Floats, state: Floats) -> tuple[Floats, Floats]:
        y = kernels.dense(x, self.kernel, self._bias, self.activation)
        return _halved_by_glu(y, self.activation), state


@dataclass
class ActivationStage:
    activation: int
    input_features: int
    state_size: int = 0

    @property
    def output_features(self) -> int:
        return self.input_features // 2 if self.activation == GLU else self.input_features

    def forward(self, x: Floats, state: Floats) -> tuple[Floats, Floats]:
        return _halved_by_glu(kernels.pointwise(x, self.activation), self.activation), state


@dataclass
class NormalizationStage:
    """LayerNormalization (statistics over the last axis) or an inference-time
    BatchNormalization (fixed moving statistics)."""

    gamma: Floats | None
    beta: Floats | None
    epsilon: float
    output_features: int
    moving_mean: Floats | None = None
    moving_variance: Floats | None = None
    rms_scaling: bool = False
    state_size: int = 0

    def __post_init__(self) -> None:
        n = self.output_features
        self._gamma = _c(self.gamma) if self.gamma is not None else np.ones(n, F32)
        self._beta = _or_zeros(self.beta, n)
        self._moving = self.moving_mean is not None and self.moving_variance is not None
        self._mean = _or_zeros(self.moving_mean, n)
        self._variance = _or_zeros(self.moving_variance, n)

    def forward(self, x: Floats, state: Floats) -> tuple[Floats, Floats]:
        y = kernels.normalize(
            x,
            self._gamma,
            self._beta,
            F32(self.epsilon),
            self._mean,
            self._variance,
            self._moving,
            self.rms_scaling,
        )
        return y, state


class StreamingRunner:
    """`step(x, state) -> (outputs, new_state)` for one model, on the compiled kernels."""

    def __init__(self, stages: list[Any], input_features: int) -> None:
        compile_kernels()  # no-op once the service has compiled them with its cache
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

    def initial_state(self) -> Floats:
        return np.zeros(self.state_size, dtype=F32)

    def step(self, x: Floats, state: Floats) -> tuple[Floats, Floats]:
        """x: (T, F) float32; state: (state_size,). Outputs are (T, U), or (U,) when
        the model returns only the last step."""
        outputs, states = self.step_batch(x[None], state[None])
        return outputs[0], states[0]

    def step_batch(self, x: Floats, states: Floats) -> tuple[Floats, Floats]:
        """x: (B, T, F); states: (B, state_size). Row b of the result equals
        `step(x[b], states[b])` bit for bit."""
        y = _c(x)
        states = _c(states)
        out_state = np.empty((x.shape[0], self.state_size), F32)
        offset = 0
        for stage in self.stages:
            end = offset + stage.state_size
            y, new_own = stage.forward(y, states[:, offset:end])
            if stage.state_size:
                out_state[:, offset:end] = new_own
            offset = end
        if not self.per_step:
            return y[:, -1, :], out_state
        return y, out_state
