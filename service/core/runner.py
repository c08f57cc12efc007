"""The streaming runner: compiled kernels computing each session row on its own.

Each stage holds one layer's float32 weights (C-contiguous, as the kernels are compiled
for) and the codes of its activations, and describes the call of its kernel of
`service.core.kernels` (`StageCall`); the runner calls all of them in one compiled call
(`service.core.model_kernel`). The kernels fix the order of every float32 operation and
use no BLAS and no libm, so outputs and state are bitwise independent of chunking, of the
sessions batched together and of the CPU.
"""

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from service.core import model_kernel as program
from service.core.activations import GLU
from service.core.arrays import F32, Floats
from service.core.kernel_cache import compile_kernels


def _c(array: Floats) -> Floats:
    return np.ascontiguousarray(array, dtype=F32)


def _or_zeros(array: Floats | None, size: int) -> Floats:
    return _c(array) if array is not None else np.zeros(size, F32)


@dataclass(frozen=True)
class StageCall:
    """One stage's kernel and its arguments: a row of `run_model`'s program."""

    kind: int
    matrices: tuple[Floats, ...] = ()
    vectors: tuple[Floats, ...] = ()
    activation: int = 0
    recurrent_activation: int = 0
    flag: bool = False
    second_flag: bool = False
    epsilon: float = 0.0


class Stage(Protocol):
    state_size: int
    output_features: int

    def call(self) -> StageCall:
        """The kernel computing x: (B, T, F), state: (B, state_size) -> (y, new_state)."""
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

    def call(self) -> StageCall:
        return StageCall(
            program.LSTM,
            (self.kernel, self.recurrent_kernel),
            (self._bias,),
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

    def call(self) -> StageCall:
        return StageCall(
            program.GRU,
            (self.kernel, self._gates_kernel, self._candidate_kernel),
            (self._input_bias, self._recurrent_bias),
            self.activation,
            self.recurrent_activation,
            self.return_sequences,
            self.reset_after,
        )


class SimpleRNNStage(_Recurrent):
    kind: ClassVar[str] = "SimpleRNN"
    state_names: ClassVar[tuple[str, ...]] = ("h",)

    def call(self) -> StageCall:
        return StageCall(
            program.SIMPLE_RNN,
            (self.kernel, self.recurrent_kernel),
            (self._bias,),
            self.activation,
            flag=self.return_sequences,
        )


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

    def call(self) -> StageCall:
        return StageCall(program.DENSE, (self.kernel,), (self._bias,), self.activation)


@dataclass
class ActivationStage:
    activation: int
    input_features: int
    state_size: int = 0

    @property
    def output_features(self) -> int:
        return self.input_features // 2 if self.activation == GLU else self.input_features

    def call(self) -> StageCall:
        return StageCall(program.POINTWISE, activation=self.activation)


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

    def call(self) -> StageCall:
        return StageCall(
            program.NORMALIZE,
            vectors=(self._gamma, self._beta, self._mean, self._variance),
            flag=self._moving,
            second_flag=self.rms_scaling,
            epsilon=self.epsilon,
        )


_ALIGNMENT = 16  # floats: each array starts on a cache line (one AVX-512 vector)


class _Program:
    """The stages' calls packed for `run_model`: one row of integers per stage, every
    weight array copied into one buffer, each starting on a cache line."""

    def __init__(self, stages: list[Any]) -> None:
        calls = [stage.call() for stage in stages]
        arrays = [a for call in calls for a in (*call.matrices, *call.vectors)]
        starts, end = [], 0
        for array in arrays:
            starts.append(end)
            end += -(-array.size // _ALIGNMENT) * _ALIGNMENT
        buffer = np.zeros(end + _ALIGNMENT, F32)
        first = -(buffer.ctypes.data // 4) % _ALIGNMENT
        self.weights = buffer[first : first + end]
        self.layout = np.zeros((len(arrays), 3), np.int64)
        for i, (array, start) in enumerate(zip(arrays, starts, strict=True)):
            self.weights[start : start + array.size] = array.ravel()
            self.layout[i] = (start, array.shape[0], array.shape[1] if array.ndim == 2 else 0)
        self.ints = np.zeros((len(stages), program.FIELDS), np.int64)
        self.epsilons = np.array([call.epsilon for call in calls], F32)
        taken = 0
        for row, call, stage in zip(self.ints, calls, stages, strict=True):
            row[program.KIND] = call.kind
            row[program.ACTIVATION] = call.activation
            row[program.RECURRENT_ACTIVATION] = call.recurrent_activation
            row[program.FLAG] = call.flag
            row[program.SECOND_FLAG] = call.second_flag
            row[program.STATE_SIZE] = stage.state_size
            row[program.FIRST_MATRIX] = taken
            row[program.FIRST_VECTOR] = taken + len(call.matrices)
            taken += len(call.matrices) + len(call.vectors)

    def run(self, x: Floats, states: Floats) -> tuple[Floats, Floats]:
        return program.run_model(  # type: ignore[no-any-return]
            x, states, self.ints, self.layout, self.weights, self.epsilons
        )


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
        self._program = _Program(stages)

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
        y, out_state = self._program.run(_c(x), _c(states))
        if not self.per_step:
            return y[:, -1, :], out_state
        return y, out_state
