"""Bad input is a 422 `invalid_input` and leaves the session exactly as it was."""

import numpy as np
import pytest

from tests.streaming import new_session, predict, send_chunk

BAD_BODIES = {
    "wrong feature count": {"inputs": [[0.1, 0.2, 0.3]]},
    "ragged rows": {"inputs": [[0.1, 0.2], [0.3]]},
    "empty chunk": {"inputs": []},
    "empty row": {"inputs": [[]]},
    "string values": {"inputs": [["0.1", "0.2"]]},
    "boolean values": {"inputs": [[True, False]]},
    "null values": {"inputs": [[None, 0.2]]},
    "flat list": {"inputs": [0.1, 0.2]},
    "missing inputs": {"offset": 0},
    "unknown field": {"inputs": [[0.1, 0.2]], "extra": 1},
    "negative offset": {"inputs": [[0.1, 0.2]], "offset": -1},
    "beyond float32": {"inputs": [[1e39, 0.2]]},
    "too many steps": {"inputs": [[0.1, 0.2]] * 2001},
}
RAW_BODIES = {
    "not json": b"inputs=1,2",
    "NaN literal": b'{"inputs": [[NaN, 0.5]]}',
    "Infinity literal": b'{"inputs": [[Infinity, 0.5]]}',
    "truncated json": b'{"inputs": [[0.1, 0.2]',
}


@pytest.fixture
def session_with_history(client):
    """A seed-lstm session 3 steps in, and the inputs that got it there."""
    inputs = np.random.default_rng(8).normal(size=(8, 2)).astype(np.float32)
    session_id = new_session(client, "seed-lstm")
    send_chunk(client, session_id, inputs[:3], offset=0)
    return session_id, inputs


def assert_untouched(client, session_id, inputs):
    assert client.get(f"/v1/sessions/{session_id}").json()["steps"] == 3
    body = send_chunk(client, session_id, inputs[3:], offset=3)
    expected = predict(client, "seed-lstm", inputs)[3:]
    assert np.array_equal(np.array(body["outputs"], dtype=np.float32), expected)


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_json_bodies_are_invalid_input_and_change_nothing(client, session_with_history, case):
    session_id, inputs = session_with_history
    response = client.post(f"/v1/sessions/{session_id}/predict", json=BAD_BODIES[case])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and error["message"]
    assert_untouched(client, session_id, inputs)


@pytest.mark.parametrize("case", sorted(RAW_BODIES))
def test_bodies_that_are_not_strict_json_are_refused(client, session_with_history, case):
    session_id, inputs = session_with_history
    response = client.post(
        f"/v1/sessions/{session_id}/predict",
        content=RAW_BODIES[case],
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert_untouched(client, session_id, inputs)


def test_stateless_predict_refuses_the_same_inputs(client):
    for body in (BAD_BODIES["wrong feature count"], BAD_BODIES["ragged rows"], {"inputs": []}):
        response = client.post("/v1/models/seed-lstm/predict", json=body)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_input"


def test_unknown_model_is_model_not_found(client):
    for response in (
        client.get("/v1/models/nope"),
        client.post("/v1/models/nope/predict", json={"inputs": [[0.0]]}),
        client.post("/v1/models/nope/sessions"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"


def test_session_id_chosen_by_client_and_duplicates(client):
    response = client.post("/v1/models/seed-lstm/sessions", json={"session_id": "client-chosen.1"})
    assert response.status_code == 201
    assert response.json()["session_id"] == "client-chosen.1"
    again = client.post("/v1/models/seed-lstm/sessions", json={"session_id": "client-chosen.1"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "session_exists"
    bad = client.post("/v1/models/seed-lstm/sessions", json={"session_id": "has space"})
    assert bad.status_code == 422


def test_ttl_limits(client):
    too_long = client.post("/v1/models/seed-lstm/sessions", json={"ttl_seconds": 10**9})
    assert too_long.status_code == 422
    assert too_long.json()["error"]["code"] == "invalid_input"
    zero = client.post("/v1/models/seed-lstm/sessions", json={"ttl_seconds": 0})
    assert zero.status_code == 422


def test_server_generated_session_ids_are_unguessable(client):
    ids = {new_session(client, "seed-lstm") for _ in range(5)}
    assert len(ids) == 5
    assert all(len(session_id) >= 24 for session_id in ids)
