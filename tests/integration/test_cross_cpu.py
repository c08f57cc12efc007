"""The same bits on every CPU: `lstm-serve` run as if on other x86-64 CPUs answers a long
random stream with exactly the bits this test process computes natively.

Each environment below makes one library take the code path it would take on another
CPU: OpenBLAS's kernel for AVX2 or AVX machines, numpy's SIMD loops without AVX-512,
glibc's libm without AVX2 and FMA, and numba compiling the kernels for a generic x86-64
(SSE2 only, 4-wide vectors) or a Haswell (AVX2 and FMA, no AVX-512) instead of this CPU.
"""

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

from service.core.models import load_model
from tests.models import DEMO_DIR, gru_lstm_dense, gru_reset_before_functional, write_models
from tests.processes import ServiceProcess
from tests.streaming import new_session, predict, random_chunking, stream

STEPS = 300

# sensor-lstm (two LSTMs, Dense), a GRU with reset_after before an LSTM and a tanh Dense,
# and a GRU without reset_after, swish, hard_sigmoid LSTM, sigmoid Dense.
MODELS = {"gru-lstm-dense": gru_lstm_dense, "gru-functional": gru_reset_before_functional}


def _simple_rnn() -> object:
    import keras

    model = keras.Sequential(
        [
            keras.Input((None, 4)),
            keras.layers.SimpleRNN(24, return_sequences=True),
            keras.layers.SimpleRNN(12, return_sequences=True, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    rng = np.random.default_rng(9)
    model.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _without_avx512() -> str:
    return " ".join(
        target
        for target in __cpu_dispatch__
        if ("AVX512" in target or target == "X86_V4") and __cpu_features__.get(target)
    )


CPU_ENVIRONMENTS = {
    "openblas-haswell": {"OPENBLAS_CORETYPE": "Haswell"},
    "openblas-sandybridge": {"OPENBLAS_CORETYPE": "Sandybridge"},
    "numpy-without-avx512": {"NPY_DISABLE_CPU_FEATURES": _without_avx512()},
    "glibc-without-avx2-fma": {"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA"},
    "numba-generic-x86-64": {"NUMBA_CPU_NAME": "generic"},
    "numba-haswell": {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""},
}


@pytest.fixture(scope="module")
def cross_cpu_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cross-cpu-models")
    shutil.copy(DEMO_DIR / "sensor-lstm.keras", directory / "sensor-lstm.keras")
    return write_models(directory, {**MODELS, "simple-rnn": _simple_rnn})


@pytest.fixture(scope="module")
def native(cross_cpu_models: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{model: (inputs, outputs)} computed in this process, on this CPU's own code paths."""
    answers = {}
    for path in sorted(cross_cpu_models.glob("*.keras")):
        runner = load_model(path).runner
        rng = np.random.default_rng(len(path.stem))
        # Wide inputs reach the activations' large-argument branches too.
        inputs = (rng.normal(size=(STEPS, runner.input_features)) * 3).astype(np.float32)
        outputs, _ = runner.step(inputs, runner.initial_state())
        answers[path.stem] = (inputs, outputs)
    return answers


@pytest.fixture(params=sorted(CPU_ENVIRONMENTS))
def emulated(request, redis_server, cross_cpu_models) -> Iterator[ServiceProcess]:
    process = ServiceProcess(
        redis_server.url, cross_cpu_models, env=CPU_ENVIRONMENTS[request.param]
    )
    process.start(timeout=600)  # a CPU name the kernel cache has not seen compiles first
    yield process
    process.stop()


def test_every_emulated_cpu_serves_the_native_bits(emulated, native):
    with httpx.Client(base_url=emulated.url, timeout=120) as client:
        for model, (inputs, want) in native.items():
            assert np.array_equal(predict(client, model, inputs), want), model
            sizes = random_chunking(STEPS, np.random.default_rng(len(model)), largest=40)
            streamed = np.concatenate(stream(client, new_session(client, model), inputs, sizes))
            assert np.array_equal(streamed, want), model
