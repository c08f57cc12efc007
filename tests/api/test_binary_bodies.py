"""Binary tensors on /v1: little-endian float32 bodies in, and out on request, with the
same bits and the same exactly-once rules as JSON."""

import numpy as np
import pytest

from tests.streaming import new_session, post_chunk, predict, send_chunk

OCTET = "application/octet-stream"
BINARY = {"content-type": OCTET, "accept": OCTET}


def raw(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x, dtype="<f4").tobytes()


def floats(body: bytes, columns: int) -> np.ndarray:
    return np.frombuffer(body, dtype="<f4").reshape(-1, columns)


@pytest.fixture
def inputs() -> np.ndarray:
    return np.random.default_rng(21).normal(size=(40, 16)).astype(np.float32)


def test_binary_chunks_answer_the_json_predict_bits(client, inputs):
    # The contract: slices of one stateless (JSON) predict, whatever the encoding.
    want = predict(client, "sensor-lstm", inputs)
    session_id = new_session(client, "sensor-lstm")
    got = []
    for start, end in ((0, 7), (7, 8), (8, 40)):
        response = client.post(
            f"/v1/sessions/{session_id}/predict?offset={start}",
            content=raw(inputs[start:end]),
            headers=BINARY,
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == OCTET
        assert response.headers["offset"] == str(start)
        assert response.headers["steps"] == str(end)
        assert response.headers["replayed"] == "false"
        got.append(floats(response.content, 8))
    assert np.array_equal(np.concatenate(got), want)


def test_a_resent_binary_chunk_is_replayed_and_a_stale_one_refused(client, inputs):
    session_id = new_session(client, "sensor-lstm")
    url = f"/v1/sessions/{session_id}/predict"
    first = client.post(f"{url}?offset=0", content=raw(inputs[:5]), headers=BINARY)
    again = client.post(f"{url}?offset=0", content=raw(inputs[:5]), headers=BINARY)
    assert again.status_code == 200 and again.headers["replayed"] == "true"
    assert again.content == first.content
    other = client.post(f"{url}?offset=0", content=raw(inputs[5:10]), headers=BINARY)
    assert other.status_code == 409 and other.json()["error"]["code"] == "offset_conflict"


def test_binary_and_json_mix_within_one_session(client, inputs):
    want = predict(client, "sensor-lstm", inputs)
    session_id = new_session(client, "sensor-lstm")
    head = client.post(
        f"/v1/sessions/{session_id}/predict?offset=0",
        content=raw(inputs[:10]),
        headers={"content-type": OCTET},  # JSON answer
    )
    assert head.status_code == 200 and head.json()["steps"] == 10
    tail = send_chunk(client, session_id, inputs[10:], offset=10)
    outputs = np.concatenate(
        [np.array(head.json()["outputs"], np.float32), np.array(tail["outputs"], np.float32)]
    )
    assert np.array_equal(outputs, want)


def test_binary_stateless_predict_answers_the_json_bits(client, inputs):
    response = client.post("/v1/models/sensor-lstm/predict", content=raw(inputs), headers=BINARY)
    assert response.status_code == 200, response.text
    assert response.headers["model-version"]
    assert np.array_equal(floats(response.content, 8), predict(client, "sensor-lstm", inputs))


def test_a_long_chunk_answers_in_json_the_bits_of_its_binary_answer(client):
    # Long chunks' JSON outputs are encoded slice by slice while the runner computes the
    # next (the heavy-work thread's slices are 256 steps): the answer, its replay and the
    # stateless predict's hold the float32 bits the binary answer carries.
    inputs = np.random.default_rng(22).normal(size=(700, 16)).astype(np.float32)
    want = client.post("/v1/models/sensor-lstm/predict", content=raw(inputs), headers=BINARY)
    assert want.status_code == 200, want.text
    session_id = new_session(client, "sensor-lstm")
    first = post_chunk(client, session_id, inputs, offset=0)
    again = post_chunk(client, session_id, inputs, offset=0)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json()["replayed"] is True and first.json()["steps"] == 700
    for outputs in (first.json()["outputs"], again.json()["outputs"]):
        assert np.array(outputs, np.float32).tobytes() == want.content
    stateless = predict(client, "sensor-lstm", inputs)
    assert stateless.tobytes() == want.content


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00\x00\x80", raw(np.zeros(17)), raw(np.array([np.nan] + [0.0] * 15))],
    ids=["empty", "not whole floats", "not whole timesteps", "NaN"],
)
def test_bad_binary_bodies_are_invalid_input_and_change_nothing(client, inputs, body):
    session_id = new_session(client, "sensor-lstm")
    send_chunk(client, session_id, inputs[:3], offset=0)
    response = client.post(
        f"/v1/sessions/{session_id}/predict?offset=3", content=body, headers=BINARY
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert client.get(f"/v1/sessions/{session_id}").json()["steps"] == 3
    stateless = client.post("/v1/models/sensor-lstm/predict", content=body, headers=BINARY)
    assert stateless.status_code == 422
    assert stateless.json()["error"]["code"] == "invalid_input"


def test_openapi_documents_both_body_forms(client):
    spec = client.get("/openapi.json").json()
    for path in ("/v1/sessions/{session_id}/predict", "/v1/models/{model}/predict"):
        operation = spec["paths"][path]["post"]
        assert set(operation["requestBody"]["content"]) == {"application/json", OCTET}
        assert OCTET in operation["responses"]["200"]["content"]
    assert "ChunkRequest" in spec["components"]["schemas"]
