"""Small real Keras models for tests, saved as .keras files."""

from pathlib import Path

import keras
import numpy as np

DEMO_DIR = Path(__file__).resolve().parents[1] / "service" / "demo_models"


def _randomize(model: keras.Model, seed: int, scale: float = 0.4) -> keras.Model:
    rng = np.random.default_rng(seed)
    model.set_weights(
        [rng.normal(0, scale, w.shape).astype(np.float32) for w in model.get_weights()]
    )
    return model


def gru_lstm_dense() -> keras.Model:
    return _randomize(
        keras.Sequential(
            [
                keras.Input((None, 5)),
                keras.layers.GRU(12, return_sequences=True, reset_after=True),
                keras.layers.LSTM(10, return_sequences=True),
                keras.layers.Dropout(0.3),
                keras.layers.Dense(3, activation="tanh"),
            ]
        ),
        seed=1,
    )


def lstm_last_step() -> keras.Model:
    return _randomize(
        keras.Sequential(
            [
                keras.Input((None, 4)),
                keras.layers.LSTM(16, return_sequences=True),
                keras.layers.LSTM(8, return_sequences=False),
                keras.layers.Dense(2),
            ]
        ),
        seed=2,
    )


def simplernn_layernorm() -> keras.Model:
    return _randomize(
        keras.Sequential(
            [
                keras.Input((None, 3)),
                keras.layers.SimpleRNN(9, return_sequences=True),
                keras.layers.LayerNormalization(),
                keras.layers.TimeDistributed(keras.layers.Dense(4, activation="relu")),
            ]
        ),
        seed=3,
    )


def gru_reset_before_functional() -> keras.Model:
    inputs = keras.Input((None, 6))
    x = keras.layers.GRU(7, return_sequences=True, reset_after=False)(inputs)
    x = keras.layers.Activation("swish")(x)
    x = keras.layers.LSTM(5, return_sequences=True, recurrent_activation="hard_sigmoid")(x)
    outputs = keras.layers.Dense(2, activation="sigmoid")(x)
    return _randomize(keras.Model(inputs, outputs), seed=4)


def stateful_fixed_batch() -> keras.Model:
    return _randomize(
        keras.Sequential(
            [
                keras.Input(batch_shape=(4, None, 3)),
                keras.layers.LSTM(6, return_sequences=True, stateful=True),
                keras.layers.Dense(1),
            ]
        ),
        seed=5,
    )


def bidirectional() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((None, 3)),
            keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True)),
        ]
    )


TEST_MODELS = {
    "gru-lstm-dense": gru_lstm_dense,
    "lstm-last-step": lstm_last_step,
    "simplernn-layernorm": simplernn_layernorm,
    "gru-functional": gru_reset_before_functional,
    "stateful-lstm": stateful_fixed_batch,
}


def write_models(directory: Path, builders: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, build in builders.items():
        build().save(directory / f"{name}.keras")  # type: ignore[operator]
    return directory


def keras_predict(path: Path, inputs: np.ndarray) -> np.ndarray:
    """Keras's own answer for one sequence, from the saved file (stateless twin if needed)."""
    from service.core.models import keras_reference

    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    return keras_reference(model, inputs.astype(np.float32))
