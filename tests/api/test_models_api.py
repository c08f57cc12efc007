"""Model listing, info, refusal of unstreamable files, and model version changes."""

import shutil

import numpy as np
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.models import DEMO_DIR, bidirectional, gru_lstm_dense, write_models
from tests.streaming import new_session, post_chunk, send_chunk


def test_model_info_describes_state_layout(client):
    info = client.get("/v1/models/sensor-lstm").json()
    assert info["input_features"] == 16 and info["output_features"] == 8
    assert info["per_step"] is True
    assert [(layer["kind"], layer["units"], layer["state"]) for layer in info["layers"]] == [
        ("LSTM", 64, ["h", "c"]),
        ("LSTM", 64, ["h", "c"]),
    ]
    assert info["state_bytes"] == 2 * 2 * 64 * 4
    assert len(info["version"]) == 16
    last = client.get("/v1/models/lstm-last-step").json()
    assert last["per_step"] is False


def test_directory_with_a_bidirectional_model_serves_the_others(redis_server, tmp_path):
    write_models(tmp_path, {"bidi": bidirectional})
    shutil.copy(DEMO_DIR / "seed-lstm.keras", tmp_path / "seed-lstm.keras")
    settings = Settings(redis_url=redis_server.url, model_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        listing = client.get("/v1/models").json()
        assert [m["name"] for m in listing["models"]] == ["seed-lstm"]
        (refused,) = listing["refused"]
        assert refused["name"] == "bidi"
        assert "Bidirectional" in refused["reason"]
        assert client.get("/v1/models/bidi").json()["error"]["code"] == "model_not_found"
        response = client.post("/v1/models/seed-lstm/predict", json={"inputs": [[0, 1]]})
        assert response.status_code == 200


def test_session_on_a_replaced_model_is_a_version_mismatch_until_reset(redis_server, tmp_path):
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    write_models(old_dir, {"m": gru_lstm_dense})
    model = gru_lstm_dense()
    model.set_weights([w * 0.5 for w in model.get_weights()])
    new_dir.mkdir()
    model.save(new_dir / "m.keras")
    inputs = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)

    with TestClient(create_app(Settings(redis_url=redis_server.url, model_dir=old_dir))) as old:
        session_id = new_session(old, "m")
        send_chunk(old, session_id, inputs[:2])
    with TestClient(create_app(Settings(redis_url=redis_server.url, model_dir=new_dir))) as new:
        response = post_chunk(new, session_id, inputs)
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "model_version_mismatch"
        assert error["session_version"] != error["served_version"]
        reset = new.post(f"/v1/sessions/{session_id}/reset").json()
        assert reset["steps"] == 0 and reset["model_version"] == error["served_version"]
        assert send_chunk(new, session_id, inputs)["steps"] == 4
