"""Real Keras 2 models built with `tf_keras`, saved as `.h5` and as `tf_keras` `.keras`."""

from pathlib import Path

import numpy as np
import tf_keras as k2

from service.core.activations import KERAS2_ACTIVATIONS
from service.core.probe import keras_reference

# The question's example and the vector it printed (design.md).
SEED_INPUTS = np.array([[0, 0], [0, 1], [0, 0], [1, 1]], dtype=np.float32)
SEED_PUBLISHED = np.array([0, 0.16222607, 0.12174767, 0.46444273], dtype=np.float32)


def _seed_weights() -> list[np.ndarray]:
    return [0.5 * np.ones((2, 4)), 0.5 * np.ones((1, 4)), np.array([0.0, 1.0, 0.0, 0.0])]


def seed(batch_input_shape: tuple | None = None, stateful: bool = False) -> k2.Model:
    """LSTM(1) with Keras 2's default `hard_sigmoid`, as the question wrote it."""
    shape = {"batch_input_shape": batch_input_shape} if batch_input_shape else {}
    lstm = k2.layers.LSTM(
        1,
        return_sequences=True,
        recurrent_activation="hard_sigmoid",
        stateful=stateful,
        **(shape or {"input_shape": (None, 2)}),
    )
    model = k2.Sequential([lstm])
    model.set_weights(_seed_weights())
    return model


SEED_VARIANTS = {
    "seed-h5.h5": lambda: seed(),
    "seed-keras.keras": lambda: seed(),
    # One step per call, as the question's stateful model read the sequence.
    "seed-stateful.h5": lambda: seed(batch_input_shape=(1, 1, 2), stateful=True),
    # Four 4-step samples in one batch, as the question's first model.
    "seed-batch4.keras": lambda: seed(batch_input_shape=(4, 4, 2)),
}


def _randomize(model: k2.Model, seed: int, scale: float = 0.4) -> k2.Model:
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.weights:
        value = rng.normal(0, scale, w.shape)
        if "moving_variance" in w.name:
            value = np.abs(value) + 0.5
        weights.append(value.astype(np.float32))
    model.set_weights(weights)
    return model


def gru_before_lstm() -> k2.Model:
    return _randomize(
        k2.Sequential(
            [
                k2.Input((None, 5)),
                k2.layers.GRU(6, return_sequences=True, reset_after=False),
                k2.layers.LSTM(5, return_sequences=True),
                k2.layers.Dropout(0.3),
                k2.layers.Dense(3, activation="tanh"),
            ]
        ),
        seed=1,
    )


def gru_simplernn_last_step() -> k2.Model:
    return _randomize(
        k2.Sequential(
            [
                k2.Input((None, 4)),
                k2.layers.GRU(6, return_sequences=True, reset_after=True),
                k2.layers.SimpleRNN(4, return_sequences=False),
                k2.layers.Dense(2),
            ]
        ),
        seed=2,
    )


def functional_heads() -> k2.Model:
    inputs = k2.Input((None, 3))
    x = k2.layers.LSTM(5, return_sequences=True, recurrent_activation="hard_sigmoid")(inputs)
    x = k2.layers.TimeDistributed(k2.layers.Dense(4, activation="gelu"))(x)
    x = k2.layers.Activation("swish")(x)
    x = k2.layers.Dropout(0.2)(x)
    x = k2.layers.LayerNormalization()(x)
    x = k2.layers.BatchNormalization()(x)
    outputs = k2.layers.Dense(2, activation="softmax")(x)
    return _randomize(k2.Model(inputs, outputs), seed=3)


def nested_stateful() -> k2.Model:
    encoder = k2.Sequential(
        [
            k2.layers.LSTM(4, return_sequences=True, stateful=True, batch_input_shape=(2, None, 3)),
            k2.layers.GRU(3, return_sequences=True),
        ],
        name="encoder",
    )
    head = k2.layers.Dense(1, use_bias=False, name="head")
    return _randomize(k2.Sequential([encoder, head]), seed=4)


def every_activation() -> k2.Model:
    """One Dense per Keras 2 activation, with small weights so none saturates."""
    layers = [k2.Input((None, 3)), k2.layers.SimpleRNN(4, return_sequences=True)]
    for name in sorted(KERAS2_ACTIVATIONS):
        layers.append(k2.layers.Dense(4, activation=name, name=f"dense_{name}"))
    return _randomize(k2.Sequential(layers), seed=5, scale=0.3)


def bidirectional() -> k2.Model:
    return k2.Sequential(
        [k2.Input((None, 3)), k2.layers.Bidirectional(k2.layers.LSTM(2, return_sequences=True))]
    )


def with_lambda() -> k2.Model:
    return k2.Sequential(
        [
            k2.Input((None, 3)),
            k2.layers.LSTM(2, return_sequences=True),
            k2.layers.Lambda(lambda x: x * 2.0, name="doubling"),
        ]
    )


KERAS2_MODELS = {
    "gru-before-lstm.h5": gru_before_lstm,
    "gru-simplernn-last.keras": gru_simplernn_last_step,
    "functional-heads.h5": functional_heads,
    "functional-heads.keras": functional_heads,
    "nested-stateful.keras": nested_stateful,
    "every-activation.h5": every_activation,
}


def save(directory: Path, builders: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for file_name, build in builders.items():
        build().save(directory / file_name)
    return directory


def tf_keras_predict(path: Path, inputs: np.ndarray) -> np.ndarray:
    """`tf_keras`'s own answer for one sequence, from the saved file."""
    model = k2.models.load_model(path, compile=False)
    return keras_reference(model, np.asarray(inputs, dtype=np.float32))
