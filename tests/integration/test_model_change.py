"""A model file replaced under a live session: 409 `model_version_mismatch`, never a state fed
to other weights; a reset moves the session to the new version."""

from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.streaming import new_session, predict, send_chunk

MODEL = "swap-lstm"


def write_version(directory: Path, seed: int) -> Path:
    model = keras.Sequential(
        [keras.Input((None, 2)), keras.layers.LSTM(3, return_sequences=True), keras.layers.Dense(1)]
    )
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / f"{MODEL}.keras")
    return directory


@pytest.fixture(scope="module")
def old_and_new(redis_server, tmp_path_factory) -> Iterator[tuple[TestClient, TestClient]]:
    """Two deployments on one Redis: one still serving the old file, one the new."""
    root = tmp_path_factory.mktemp("model-change")
    old = Settings(redis_url=redis_server.url, model_dir=write_version(root / "old", seed=1))
    new = Settings(redis_url=redis_server.url, model_dir=write_version(root / "new", seed=2))
    with TestClient(create_app(old)) as old_client, TestClient(create_app(new)) as new_client:
        yield old_client, new_client


def test_a_session_started_on_the_old_version_is_refused_by_the_new(old_and_new):
    old, new = old_and_new
    inputs = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    old_version = old.get(f"/v1/models/{MODEL}").json()["version"]
    new_version = new.get(f"/v1/models/{MODEL}").json()["version"]
    assert old_version != new_version
    session_id = new_session(old, MODEL)
    send_chunk(old, session_id, inputs[:4], offset=0)

    response = new.post(
        f"/v1/sessions/{session_id}/predict", json={"inputs": inputs[4:].tolist(), "offset": 4}
    )

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "model_version_mismatch"
    assert (error["session_version"], error["served_version"]) == (old_version, new_version)
    # Untouched: the old deployment carries on, bit-exact with its own full-sequence call.
    rest = send_chunk(old, session_id, inputs[4:], offset=4)
    assert np.array_equal(np.array(rest["outputs"], np.float32), predict(old, MODEL, inputs)[4:])


def test_a_reset_moves_the_session_to_the_served_version(old_and_new):
    old, new = old_and_new
    inputs = np.random.default_rng(1).normal(size=(8, 2)).astype(np.float32)
    session_id = new_session(old, MODEL)
    send_chunk(old, session_id, inputs[:3], offset=0)

    reset = new.post(f"/v1/sessions/{session_id}/reset")

    assert reset.status_code == 200
    assert reset.json()["steps"] == 0
    assert reset.json()["model_version"] == new.get(f"/v1/models/{MODEL}").json()["version"]
    body = send_chunk(new, session_id, inputs, offset=0)
    assert np.array_equal(np.array(body["outputs"], np.float32), predict(new, MODEL, inputs))
    refused = old.post(f"/v1/sessions/{session_id}/predict", json={"inputs": inputs.tolist()})
    assert refused.json()["error"]["code"] == "model_version_mismatch"
