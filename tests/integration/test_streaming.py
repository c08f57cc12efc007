"""Any chunking through a Redis-backed session equals one full-sequence call, bit for bit."""

import numpy as np
import pytest

from service.core.models import PROBE_TOLERANCE, scaled_error
from tests.models import keras_predict
from tests.streaming import new_session, predict, random_chunking, stream

PER_STEP_MODELS = [
    "seed-lstm",
    "sensor-lstm",
    "gru-lstm-dense",
    "simplernn-layernorm",
    "gru-functional",
    "stateful-lstm",
]
SEED_INPUTS = np.array([[0, 0], [0, 1], [0, 0], [1, 1]], dtype=np.float32)
# Printed by Keras 2 in the well-known stateful-LSTM question (design.md).
SEED_PUBLISHED = np.array([0.0, 0.16222607, 0.12174767, 0.46444273], dtype=np.float32)


def features_of(client, model: str) -> int:
    return int(client.get(f"/v1/models/{model}").json()["input_features"])


@pytest.mark.parametrize("model", PER_STEP_MODELS)
def test_random_chunkings_match_full_sequence_bit_for_bit(client, model_dir, model):
    # A seed per model that is the same in every process (hash() of a str is not).
    rng = np.random.default_rng(PER_STEP_MODELS.index(model))
    inputs = rng.normal(size=(240, features_of(client, model))).astype(np.float32)
    full = predict(client, model, inputs)

    reference = keras_predict(model_dir / f"{model}.keras", inputs)
    assert scaled_error(full, reference) <= PROBE_TOLERANCE
    for _ in range(3):
        session_id = new_session(client, model)
        chunks = stream(client, session_id, inputs, random_chunking(len(inputs), rng))
        assert np.array_equal(np.concatenate(chunks), full)


def test_last_step_model_returns_each_chunks_last_output(client, model_dir):
    model = "lstm-last-step"
    rng = np.random.default_rng(11)
    inputs = rng.normal(size=(210, 4)).astype(np.float32)
    sizes = random_chunking(len(inputs), rng, largest=60)
    session_id = new_session(client, model)
    outputs = stream(client, session_id, inputs, sizes)

    ends = np.cumsum(sizes)
    for end, output in zip(ends, outputs, strict=True):
        assert output.shape == (2,)
        assert np.array_equal(output, predict(client, model, inputs[:end]))
    reference = keras_predict(model_dir / f"{model}.keras", inputs)
    assert scaled_error(outputs[-1], reference) <= PROBE_TOLERANCE


@pytest.mark.parametrize("sizes", [[1, 1, 1, 1], [2, 2], [1, 3], [4]])
def test_seed_example_gives_published_numbers_in_every_chunking(client, sizes):
    session_id = new_session(client, "seed-lstm")
    outputs = np.concatenate(stream(client, session_id, SEED_INPUTS, sizes)).ravel()
    np.testing.assert_allclose(outputs, SEED_PUBLISHED, atol=1e-7, rtol=0)


def test_reset_restores_step_zero_outputs_exactly(client):
    rng = np.random.default_rng(5)
    inputs = rng.normal(size=(30, 16)).astype(np.float32)
    session_id = new_session(client, "sensor-lstm")
    first = stream(client, session_id, inputs, [10, 20])

    response = client.post(f"/v1/sessions/{session_id}/reset")
    assert response.status_code == 200
    assert response.json()["steps"] == 0
    again = stream(client, session_id, inputs, [30])
    assert np.array_equal(np.concatenate(first), again[0])


def test_delete_then_predict_is_session_not_found(client):
    session_id = new_session(client, "seed-lstm")
    assert client.delete(f"/v1/sessions/{session_id}").status_code == 204

    response = client.post(f"/v1/sessions/{session_id}/predict", json={"inputs": [[0, 0]]})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "session_not_found"
    assert client.get(f"/v1/sessions/{session_id}").status_code == 404
    assert client.delete(f"/v1/sessions/{session_id}").status_code == 404


def test_unknown_session_is_an_error_never_a_fresh_state(client):
    response = client.post("/v1/sessions/never-created/predict", json={"inputs": [[0, 0]]})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "session_not_found"
