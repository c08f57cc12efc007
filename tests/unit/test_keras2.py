"""Keras 2 files (`.h5`, `tf_keras` `.keras`) read without Keras 3, against `tf_keras` itself."""

import numpy as np
import pytest

from service.core.keras2_file import is_keras2_file, read_keras2_file
from service.core.keras2_plan import read_chain
from service.core.keras2_reference import numpy_reference
from service.core.models import PROBE_TOLERANCE, load_model, scaled_error
from service.errors import ModelNotStreamable
from tests.keras2_models import (
    KERAS2_MODELS,
    SEED_INPUTS,
    SEED_PUBLISHED,
    SEED_VARIANTS,
    bidirectional,
    save,
    tf_keras_predict,
    with_lambda,
)
from tests.models import DEMO_DIR


@pytest.fixture(scope="module")
def keras2_dir(tmp_path_factory):
    return save(tmp_path_factory.mktemp("keras2"), {**KERAS2_MODELS, **SEED_VARIANTS})


def probe_like(features: int, steps: int = 40, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(steps, features)).astype(np.float32)


@pytest.mark.parametrize("file_name", sorted(KERAS2_MODELS))
def test_runner_matches_tf_keras_predict(keras2_dir, file_name):
    path = keras2_dir / file_name
    served = load_model(path)
    assert served.probe_reference.startswith("tf_keras")
    x = probe_like(served.runner.input_features)
    outputs, _ = served.runner.step(x, served.runner.initial_state())
    assert scaled_error(outputs, tf_keras_predict(path, x)) <= PROBE_TOLERANCE


@pytest.mark.parametrize("file_name", sorted(KERAS2_MODELS))
def test_float64_reference_matches_tf_keras_predict(keras2_dir, file_name):
    # The probe's fallback when tf_keras is not installed must itself be right.
    path = keras2_dir / file_name
    chain = read_chain(read_keras2_file(path))
    x = probe_like(chain.input_features, seed=8)
    expected = tf_keras_predict(path, x)
    assert scaled_error(numpy_reference(chain, x), expected) <= PROBE_TOLERANCE


@pytest.mark.parametrize("file_name", sorted(SEED_VARIANTS))
def test_the_question_model_gives_the_published_vector(keras2_dir, file_name):
    served = load_model(keras2_dir / file_name)
    outputs, _ = served.runner.step(SEED_INPUTS, served.runner.initial_state())
    np.testing.assert_allclose(outputs[:, 0], SEED_PUBLISHED, atol=1e-7, rtol=0)


def test_keras2_files_are_told_from_keras3_files(keras2_dir):
    assert is_keras2_file(keras2_dir / "seed-h5.h5")
    assert is_keras2_file(keras2_dir / "seed-keras.keras")
    assert not is_keras2_file(DEMO_DIR / "seed-lstm.keras")


def test_same_model_in_both_formats_has_one_runner(keras2_dir):
    h5 = load_model(keras2_dir / "functional-heads.h5")
    zipped = load_model(keras2_dir / "functional-heads.keras")
    x = probe_like(3, seed=9)
    assert np.array_equal(
        h5.runner.step(x, h5.runner.initial_state())[0],
        zipped.runner.step(x, zipped.runner.initial_state())[0],
    )


def test_bidirectional_is_refused_with_todays_message(tmp_path):
    save(tmp_path, {"bidi.h5": bidirectional})
    with pytest.raises(ModelNotStreamable, match=r"\(Bidirectional\) is not supported.*backwards"):
        load_model(tmp_path / "bidi.h5")


def test_a_lambda_layer_is_refused_before_anything_loads_it(tmp_path):
    # A Keras 2 Lambda carries Python bytecode; the reader refuses it from the config alone.
    save(tmp_path, {"lambda.h5": with_lambda})
    with pytest.raises(ModelNotStreamable, match=r"'doubling' \(Lambda\).*cannot be streamed"):
        load_model(tmp_path / "lambda.h5")


def test_probe_tolerance_refuses_against_tf_keras(keras2_dir):
    with pytest.raises(ModelNotStreamable, match=r"differs from Keras 2 \(tf_keras"):
        load_model(keras2_dir / "gru-before-lstm.h5", tolerance=1e-15)
