"""The compiled runner against Keras itself, and its chunk- and batch-invariance."""

import keras
import numpy as np
import pytest

from service.core.activations import legacy_hard_sigmoid
from service.core.models import PROBE_TOLERANCE, keras_reference, load_model, scaled_error
from service.core.plan import build_runner
from service.errors import ModelNotStreamable
from tests.models import TEST_MODELS, bidirectional
from tests.streaming import random_chunking


def sequence(model, steps: int, seed: int = 0) -> np.ndarray:
    features = int(model.inputs[0].shape[-1])
    return np.random.default_rng(seed).normal(size=(steps, features)).astype(np.float32)


@pytest.fixture(scope="module", params=sorted(TEST_MODELS))
def model(request):
    return TEST_MODELS[request.param]()


def test_runner_matches_keras_predict(model):
    runner = build_runner(model)
    x = sequence(model, 50)
    outputs, _ = runner.step(x, runner.initial_state())
    assert scaled_error(outputs, keras_reference(model, x)) <= PROBE_TOLERANCE


def test_any_chunking_is_bitwise_identical_to_one_call(model):
    runner = build_runner(model)
    x = sequence(model, 120, seed=1)
    full, full_state = runner.step(x, runner.initial_state())
    rng = np.random.default_rng(2)
    for _ in range(5):
        state, outputs, start = runner.initial_state(), [], 0
        for size in random_chunking(len(x), rng, largest=17):
            out, state = runner.step(x[start : start + size], state)
            outputs.append(out)
            start += size
        assert np.array_equal(state, full_state)
        if runner.per_step:
            assert np.array_equal(np.concatenate(outputs), full)
        else:
            assert np.array_equal(outputs[-1], full)


def test_batching_sessions_changes_no_bit(model):
    runner = build_runner(model)
    rng = np.random.default_rng(3)
    batch = 7
    xs = rng.normal(size=(batch, 9, runner.input_features)).astype(np.float32)
    states = rng.normal(size=(batch, runner.state_size)).astype(np.float32)
    outputs, new_states = runner.step_batch(xs, states)
    for b in range(batch):
        alone, alone_state = runner.step(xs[b], states[b])
        assert np.array_equal(outputs[b], alone)
        assert np.array_equal(new_states[b], alone_state)


def test_state_layout_is_declared_layer_order(model):
    runner = build_runner(model)
    per_layer = [layer.units * len(layer.state_names) for layer in runner.recurrent_layers]
    assert sum(per_layer) == runner.state_size
    assert runner.state_bytes == 4 * runner.state_size


def _activation_names() -> list[str]:
    names = []
    for name in sorted(keras.activations.__dict__):
        fn = getattr(keras.activations, name)
        if (
            callable(fn)
            and not name.startswith("_")
            and name not in ("get", "serialize", "deserialize")
        ):
            names.append(name)
    return names


@pytest.mark.parametrize("name", _activation_names())
def test_every_keras_activation_streams_within_tolerance(name):
    activation = keras.activations.get(name)
    rng = np.random.default_rng(4)

    # Weights small enough that no activation runs away: with 0.3, `exponential` in the
    # SimpleRNN's recurrence reached 4.7e4 in 12 steps, where exp turns its argument's
    # last-bit differences into 1.2e-5 relative, and the CPU's kernels decided the verdict.
    def small(shape):
        return rng.normal(0, 0.2, shape).astype(np.float32)

    try:
        model = keras.Sequential(
            [
                keras.Input((None, 3)),
                keras.layers.LSTM(4, return_sequences=True, recurrent_activation=activation),
                keras.layers.SimpleRNN(4, return_sequences=True, activation=activation),
                keras.layers.Dense(2, activation=activation),
            ]
        )
        model.set_weights([small(w.shape) for w in model.get_weights()])
        reference = keras_reference(model, sequence(model, 12))
    except Exception as exc:  # Keras itself cannot run it in a recurrent cell (e.g. glu)
        pytest.skip(f"Keras cannot use {name} here: {type(exc).__name__}")
    if not np.isfinite(reference).all():
        pytest.skip(f"{name} overflows even in Keras")
    runner = build_runner(model)
    outputs, _ = runner.step(sequence(model, 12), runner.initial_state())
    # The production probe's measure: a CPU's kernels must not decide whether CI is green.
    assert scaled_error(outputs, reference) <= PROBE_TOLERANCE


def test_legacy_hard_sigmoid_is_keras_2_definition():
    x = np.array([-3.0, -2.5, -1.0, 0.0, 0.7, 2.5, 4.0], dtype=np.float32)
    expected = np.clip(0.2 * x + 0.5, 0.0, 1.0)
    assert np.allclose(keras.ops.convert_to_numpy(legacy_hard_sigmoid(x)), expected)


def _refused(layers, shape=(None, 3)) -> str:
    model = keras.Sequential([keras.Input(shape), *layers])
    with pytest.raises(ModelNotStreamable) as excinfo:
        build_runner(model)
    return str(excinfo.value)


def test_bidirectional_is_refused_naming_the_layer():
    message = _refused(bidirectional().layers)
    assert "Bidirectional" in message and "backwards" in message


def test_go_backwards_is_refused():
    assert "go_backwards" in _refused([keras.layers.LSTM(3, go_backwards=True, name="rev")])


@pytest.mark.parametrize(
    "layer",
    [
        keras.layers.Conv1D(2, 3, padding="same", name="conv"),
        keras.layers.GlobalAveragePooling1D(name="pool"),
        keras.layers.Masking(name="mask"),
    ],
    ids=["conv", "pooling", "masking"],
)
def test_layers_that_mix_timesteps_are_refused_by_name(layer):
    message = _refused([keras.layers.LSTM(3, return_sequences=True), layer])
    assert f"'{layer.name}'" in message and "cannot be streamed" in message


def test_recurrent_after_last_step_layer_is_refused():
    # Keras itself refuses a recurrent layer on a last-step (2-D) output...
    with pytest.raises(ValueError, match="expected ndim=3"):
        keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(3), keras.layers.LSTM(2)])
    # ...and the only way back to a sequence, repeating the last step, mixes timesteps.
    message = _refused([keras.layers.LSTM(3), keras.layers.RepeatVector(2), keras.layers.LSTM(2)])
    assert "'repeat_vector" in message and "cannot be streamed" in message


def test_model_without_recurrent_layer_is_refused():
    assert "no recurrent layer" in _refused([keras.layers.Dense(2)])


def test_branching_functional_model_is_refused():
    inputs = keras.Input((None, 3))
    a = keras.layers.LSTM(4, return_sequences=True)(inputs)
    b = keras.layers.Dense(4)(inputs)
    model = keras.Model(inputs, keras.layers.Add()([a, b]))
    with pytest.raises(ModelNotStreamable):
        build_runner(model)


def test_probe_tolerance_refuses_a_model_that_differs_from_keras(tmp_path):
    TEST_MODELS["gru-lstm-dense"]().save(tmp_path / "m.keras")
    assert load_model(tmp_path / "m.keras").probe_max_error <= 1e-5
    with pytest.raises(ModelNotStreamable, match=r"differs from Keras model\.predict"):
        load_model(tmp_path / "m.keras", tolerance=1e-15)


@pytest.mark.parametrize("name", ["glu", "softmax", "log_softmax", "sparsemax"])
def test_activations_over_a_whole_vector_stream_within_tolerance(name):
    # glu halves the features and the others reduce over them: only per-timestep layers
    # can use them, so they get a model of their own (Keras refuses them in a cell).
    rng = np.random.default_rng(5)
    model = keras.Sequential(
        [
            keras.Input((None, 3)),
            keras.layers.LSTM(6, return_sequences=True),
            keras.layers.Dense(8, activation=name),
            keras.layers.Activation(name),
        ]
    )
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    x = sequence(model, 15)
    runner = build_runner(model)
    outputs, _ = runner.step(x, runner.initial_state())
    assert outputs.shape[-1] == runner.output_features
    np.testing.assert_allclose(outputs, keras_reference(model, x), atol=1e-5, rtol=1e-5)
