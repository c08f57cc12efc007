"""Builds the bundled demo models into service/demo_models/ (reproducibly: fixed seeds).

seed-lstm    LSTM(1) on 2 features with the weights of the classic Keras stateful-LSTM
             question and Keras 2's hard sigmoid; [[0,0],[0,1],[0,0],[1,1]] gives
             [0, 0.16222607, 0.12174767, 0.46444273] in any chunking.
sensor-lstm  LSTM(64) -> LSTM(64) -> Dense(8) on 16 noisy sensor channels, trained to
             forecast the next clean reading of sensors 0-7.

Run: python scripts/build_demo_models.py [--out DIR] [--epochs N]
"""

import argparse
from pathlib import Path

import numpy as np

import service  # noqa: F401  (environment defaults before TensorFlow loads)
from service.core.activations import legacy_hard_sigmoid

OUT = Path(__file__).resolve().parents[1] / "service" / "demo_models"
SENSORS, FORECAST, STEPS = 16, 8, 96


def build_seed_lstm():  # type: ignore[no-untyped-def]
    import keras

    model = keras.Sequential(
        [
            keras.Input((None, 2)),
            keras.layers.LSTM(
                1, return_sequences=True, recurrent_activation=legacy_hard_sigmoid, name="lstm"
            ),
        ],
        name="seed_lstm",
    )
    model.get_layer("lstm").set_weights(
        [0.5 * np.ones((2, 4)), 0.5 * np.ones((1, 4)), np.array([0.0, 1.0, 0.0, 0.0])]
    )
    return model


def sensor_data(sequences: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sinusoidal sensors; the target is the next clean value of sensors 0-7."""
    t = np.arange(STEPS + 1)[None, :, None]
    freq = rng.uniform(0.01, 0.12, size=(sequences, 1, SENSORS))
    phase = rng.uniform(0, 2 * np.pi, size=(sequences, 1, SENSORS))
    amplitude = rng.uniform(0.5, 1.5, size=(sequences, 1, SENSORS))
    clean = amplitude * np.sin(2 * np.pi * freq * t + phase)
    noisy = clean + rng.normal(0, 0.1, size=clean.shape)
    return noisy[:, :-1].astype(np.float32), clean[:, 1:, :FORECAST].astype(np.float32)


def build_sensor_lstm(epochs: int):  # type: ignore[no-untyped-def]
    import keras

    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    x, y = sensor_data(512, rng)
    model = keras.Sequential(
        [
            keras.Input((None, SENSORS)),
            keras.layers.LSTM(64, return_sequences=True, name="lstm_1"),
            keras.layers.LSTM(64, return_sequences=True, name="lstm_2"),
            keras.layers.Dense(FORECAST, name="forecast"),
        ],
        name="sensor_lstm",
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    history = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    x_test, y_test = sensor_data(64, np.random.default_rng(99))
    test_mse = float(np.mean((model.predict(x_test, verbose=0) - y_test) ** 2))
    naive_mse = float(np.mean((x_test[:, :, :FORECAST] - y_test) ** 2))
    print(
        f"sensor-lstm: train loss {history.history['loss'][-1]:.4f}, test MSE {test_mse:.4f} "
        f"(repeating the last noisy reading: {naive_mse:.4f})"
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    build_seed_lstm().save(args.out / "seed-lstm.keras")
    build_sensor_lstm(args.epochs).save(args.out / "sensor-lstm.keras")
    print(f"wrote {sorted(p.name for p in args.out.glob('*.keras'))} to {args.out}")


if __name__ == "__main__":
    main()
