"""The runner alone: one chunk of sensor-lstm through each way of running it, in one run.

The compiled kernels (the service's runner), the numpy runner they replaced
(bench/numpy_runner.py), a stock Keras streaming twin in a tf.function, and
`model.predict`. Ratios come from the same run, so they survive a noisy machine better
than the absolute times.

Run: python -m bench.runner_backends   (prints a table; about two minutes)
"""

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import service  # noqa: F401  (environment defaults before TensorFlow loads)
from bench.numpy_runner import NumpyRunner
from service.core.models import load_model
from service.settings import DEMO_MODEL_DIR

MODEL = DEMO_MODEL_DIR / "sensor-lstm.keras"


def per_call_ms(fn: Callable[[], Any], budget_s: float = 2.0, least: int = 5) -> float:
    fn()
    samples = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < least or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def keras_streaming_twin() -> Callable[[np.ndarray, list[np.ndarray]], Any]:
    """Stock Keras: LSTMs taking initial_state and returning their state, in a tf.function."""
    import keras
    import tensorflow as tf

    source = keras.saving.load_model(MODEL, safe_mode=True, compile=False)
    x_in = keras.Input((None, 16))
    states_in = [keras.Input((64,)) for _ in range(4)]
    x, h1, c1 = keras.layers.LSTM(64, return_sequences=True, return_state=True)(
        x_in, initial_state=states_in[:2]
    )
    x, h2, c2 = keras.layers.LSTM(64, return_sequences=True, return_state=True)(
        x, initial_state=states_in[2:]
    )
    y = keras.layers.Dense(8)(x)
    twin = keras.Model([x_in, *states_in], [y, h1, c1, h2, c2])
    twin.set_weights(source.get_weights())
    spec = [tf.TensorSpec([None, None, 16], tf.float32)] + [
        tf.TensorSpec([None, 64], tf.float32)
    ] * 4

    @tf.function(input_signature=spec)
    def call(x: Any, *states: Any) -> Any:
        return twin([x, *states], training=False)

    return lambda x, states: call(x, *states)


def main() -> None:
    served = load_model(MODEL)
    runner = served.runner
    numpy_runner = NumpyRunner(runner)
    import keras

    keras_model = keras.saving.load_model(MODEL, safe_mode=True, compile=False)
    twin = keras_streaming_twin()
    zeros = [np.zeros((1, 64), np.float32) for _ in range(4)]
    rows = []
    for steps in (1, 10, 100, 1000):
        x = np.random.default_rng(0).normal(size=(steps, 16)).astype(np.float32)
        state = runner.initial_state()
        rows.append(
            (
                steps,
                per_call_ms(lambda x=x, state=state: runner.step(x, state)),
                per_call_ms(lambda x=x, state=state: numpy_runner.step(x, state)),
                per_call_ms(lambda x=x: twin(x[None], zeros)),
                per_call_ms(lambda x=x: keras_model.predict(x[None], verbose=0), budget_s=3),
            )
        )
    names = ("compiled", "numpy runner", "tf.function twin", "model.predict")
    print("sensor-lstm, one session, median microseconds per timestep")
    print(f"{'steps':>6}" + "".join(f"{name:>18}" for name in names))
    for steps, *times in rows:
        print(f"{steps:>6}" + "".join(f"{1000 * ms / steps:>18.2f}" for ms in times))
    print("how many times faster the compiled runner is, same run")
    for steps, compiled_ms, *others in rows:
        ratios = ", ".join(
            f"{name} {ms / compiled_ms:.1f}x" for name, ms in zip(names[1:], others, strict=True)
        )
        print(f"{steps:>6} steps: {ratios}")


if __name__ == "__main__":
    main()
