"""The /v2 protocol over raw HTTP: what tritonclient never sends, and the error shape."""

import gzip
import json
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.main import create_app
from tests.streaming import predict

HEADER = "Inference-Header-Content-Length"


def tensor(x: np.ndarray, **extra) -> dict:
    return {"name": "inputs", "datatype": "FP32", "shape": list(x.shape), **extra}


def json_request(x: np.ndarray, nested: bool = False, **fields) -> dict:
    data = x.tolist() if nested else x.ravel().tolist()
    return {"inputs": [tensor(x, data=data)], **fields}


def binary_request(header: dict, raw: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + raw, {HEADER: str(len(text))}


def infer(client, body, model="seed-lstm", headers=None):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(f"/v2/models/{model}/infer", content=content, headers=headers or {})


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    return body["error"]


def json_outputs(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    return np.array(output["data"], dtype=np.float32).reshape(output["shape"])


def test_json_without_content_type_matches_native_predict(client):
    x = np.random.default_rng(1).normal(size=(1, 6, 2)).astype(np.float32)
    response = infer(client, json_request(x, nested=True, id="req-9"))

    assert "content-type" not in response.request.headers
    assert response.json()["id"] == "req-9"
    assert response.json()["model_version"] == client.get("/v1/models/seed-lstm").json()["version"]
    assert json_outputs(response)[0].tobytes() == predict(client, "seed-lstm", x[0]).tobytes()


def test_binary_request_with_json_output(client):
    x = np.random.default_rng(2).normal(size=(2, 5, 4)).astype(np.float32)
    header = {
        "inputs": [tensor(x, parameters={"binary_data_size": x.nbytes})],
        "outputs": [{"name": "outputs", "parameters": {"binary_data": False}}],
    }
    body, headers = binary_request(header, x.astype("<f4").tobytes())
    outputs = json_outputs(infer(client, body, "lstm-last-step", headers))

    assert outputs.shape == (2, 2)  # [batch, units]: the model returns its last step
    for row in range(2):
        assert outputs[row].tobytes() == predict(client, "lstm-last-step", x[row]).tobytes()


def test_binary_output_bytes_are_little_endian_float32(client):
    x = np.random.default_rng(3).normal(size=(1, 7, 2)).astype(np.float32)
    response = infer(client, json_request(x, parameters={"binary_data_output": True}))

    assert response.status_code == 200, response.text
    size = int(response.headers[HEADER])
    header = json.loads(response.content[:size])
    output = header["outputs"][0]
    assert output["shape"] == [1, 7, 1] and "data" not in output
    raw = response.content[size:]
    assert len(raw) == output["parameters"]["binary_data_size"] == 7 * 4
    expected = predict(client, "seed-lstm", x[0])
    assert raw == expected.astype("<f4").tobytes()


def test_batch_rows_equal_single_row_requests_bit_for_bit(client):
    x = np.random.default_rng(4).normal(size=(5, 30, 16)).astype(np.float32)
    batch = json_outputs(infer(client, json_request(x), "sensor-lstm"))
    for row in range(5):
        single = json_outputs(infer(client, json_request(x[row : row + 1]), "sensor-lstm"))
        assert batch[row].tobytes() == single[0].tobytes()


def test_sequence_id_zero_is_stateless(client):
    x = np.ones((1, 3, 2), dtype=np.float32)
    first = json_outputs(infer(client, json_request(x, parameters={"sequence_id": 0})))
    again = json_outputs(infer(client, json_request(x, parameters={"sequence_id": ""})))
    assert first.tobytes() == again.tobytes() == predict(client, "seed-lstm", x[0]).tobytes()


def test_sequence_state_is_kept_apart_from_native_sessions(client):
    x = np.random.default_rng(5).normal(size=(1, 4, 2)).astype(np.float32)
    sequence_id = f"s-{uuid.uuid4().hex}"
    start = {"sequence_id": sequence_id, "sequence_start": True}
    assert infer(client, json_request(x, parameters=start)).status_code == 200
    # A native session under the same name is another session at step 0.
    assert (
        client.post("/v1/models/seed-lstm/sessions", json={"session_id": sequence_id}).status_code
        == 201
    )
    assert client.get(f"/v1/sessions/{sequence_id}").json()["steps"] == 0

    following = json_request(x, parameters={"sequence_id": sequence_id})
    response = infer(client, following)
    assert response.json()["parameters"]["sequence_steps"] == 8


BAD_REQUESTS = {
    "not json": (b"{nope", "not valid JSON"),
    "not an object": (b"[1, 2]", "must be a JSON object"),
    "two inputs": ({"inputs": [tensor(np.zeros((1, 1, 2)), data=[0, 0])] * 2}, "exactly one"),
    "ragged data": ({"inputs": [tensor(np.zeros((1, 2, 2)), data=[[0, 0], [0]])]}, "ragged"),
    "string data": ({"inputs": [tensor(np.zeros((1, 1, 2)), data=["a", "b"])]}, "numbers"),
    "too few values": ({"inputs": [tensor(np.zeros((1, 2, 2)), data=[0, 0])]}, "needs 4"),
    "no data": ({"inputs": [tensor(np.zeros((1, 1, 2)))]}, "'data'"),
    "empty": ({"inputs": [tensor(np.zeros((1, 0, 2)), data=[])]}, "at least one timestep"),
    "NaN": (b'{"inputs": [{"name": "inputs", "datatype": "FP32", "shape": [1, 1, 2], '
            b'"data": [NaN, 0]}]}', "finite"),
    "beyond float32": ({"inputs": [tensor(np.zeros((1, 1, 2)), data=[1e39, 0])]}, "finite"),
    "negative dim": ({"inputs": [{**tensor(np.zeros((1, 1, 2))), "shape": [1, -1, 2]}]}, "shape"),
    "unknown output": (json_request(np.zeros((1, 1, 2)), outputs=[{"name": "y"}]), "'outputs'"),
    "shared memory": (
        json_request(np.zeros((1, 1, 2)), outputs=[
            {"name": "outputs", "parameters": {"shared_memory_region": "r"}}
        ]),
        "not supported",
    ),
    "id not a string": (json_request(np.zeros((1, 1, 2)), id=5), "'id'"),
    "start without id": (
        json_request(np.zeros((1, 1, 2)), parameters={"sequence_start": True}), "need a sequence_id"
    ),
    "bool sequence id": (
        json_request(np.zeros((1, 1, 2)), parameters={"sequence_id": True}), "sequence_id"
    ),
    "negative sequence id": (
        json_request(np.zeros((1, 1, 2)), parameters={"sequence_id": -3}), "unsigned 64-bit"
    ),
    "too large sequence id": (
        json_request(np.zeros((1, 1, 2)), parameters={"sequence_id": 2**64}), "unsigned 64-bit"
    ),
    "start not a bool": (
        json_request(np.zeros((1, 1, 2)), parameters={"sequence_id": 3, "sequence_start": "yes"}),
        "true or false",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_requests_are_400_with_a_message(client, case):
    body, expected = BAD_REQUESTS[case]
    assert expected in error_of(infer(client, body), 400)


def test_binary_framing_errors_are_400(client):
    x = np.zeros((1, 2, 2), dtype=np.float32)
    header = {"inputs": [tensor(x, parameters={"binary_data_size": x.nbytes})]}
    body, headers = binary_request(header, x.tobytes())

    assert "binary data" in error_of(infer(client, body[:-4], headers=headers), 400)
    assert "follow the JSON header" in error_of(infer(client, body + b"\0", headers=headers), 400)
    assert HEADER in error_of(infer(client, body, headers={HEADER: "99999"}), 400)
    assert HEADER in error_of(infer(client, body), 400)  # binary data but no header
    wrong_size = {"inputs": [tensor(x, parameters={"binary_data_size": 12})]}
    body, headers = binary_request(wrong_size, x.tobytes()[:12])
    assert "needs 16 bytes" in error_of(infer(client, body, headers=headers), 400)
    both = {"inputs": [tensor(x, data=[0] * 4, parameters={"binary_data_size": 16})]}
    body, headers = binary_request(both, x.tobytes())
    assert "both" in error_of(infer(client, body, headers=headers), 400)


def test_gzip_body_and_unsupported_encoding(client):
    x = np.random.default_rng(6).normal(size=(1, 3, 2)).astype(np.float32)
    packed = gzip.compress(json.dumps(json_request(x)).encode())
    outputs = json_outputs(infer(client, packed, headers={"Content-Encoding": "gzip"}))
    assert outputs[0].tobytes() == predict(client, "seed-lstm", x[0]).tobytes()

    assert "br" in error_of(infer(client, packed, headers={"Content-Encoding": "br"}), 400)
    assert "gzip" in error_of(infer(client, b"plain", headers={"Content-Encoding": "gzip"}), 400)


def test_unknown_routes_models_and_versions_are_404_in_v2_shape(client):
    assert "no route" in error_of(client.get("/v2/repository/index"), 404)
    assert "no route" in error_of(client.get("/v2/models/seed-lstm/infer"), 404)
    assert "nope" in error_of(client.get("/v2/models/nope"), 404)
    assert "nope" in error_of(client.get("/v2/models/nope/ready"), 404)
    # A flat file is version 1 of its model; there is no version 2.
    assert "version" in error_of(client.get("/v2/models/seed-lstm/versions/2/ready"), 404)
    x = np.zeros((1, 1, 2), dtype=np.float32)
    response = client.post(
        "/v2/models/seed-lstm/versions/2/infer", content=json.dumps(json_request(x))
    )
    assert "version" in error_of(response, 404)
    # The native API keeps its own error shape.
    native = client.get("/v1/models/nope")
    assert native.status_code == 404 and native.json()["error"]["code"] == "model_not_found"


def test_health_and_metadata_routes(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/seed-lstm/ready").json() == {"name": "seed-lstm", "ready": True}
    version = client.get("/v1/models/seed-lstm").json()["version"]
    # Versions are named by number, as in Triton, or by fingerprint.
    assert client.get(f"/v2/models/seed-lstm/versions/{version}").json()["versions"] == ["1"]
    assert client.get("/v2/models/seed-lstm/versions/1/ready").json()["ready"] is True
    assert "/v2/models/{model}/infer" in client.get("/openapi.json").json()["paths"]


@pytest.fixture(scope="module")
def small_body_client(client, settings):
    limited = settings.model_copy(update={"max_body_bytes": 2000})
    app = create_app(limited, registry=client.app.state.sessions.models)
    with TestClient(app) as small:
        yield small


def test_too_large_bodies_are_413_in_v2_shape(small_body_client):
    x = np.zeros((1, 300, 2), dtype=np.float32)
    body = json.dumps(json_request(x)).encode()
    assert len(body) > 2000
    assert "2000" in error_of(infer(small_body_client, body), 413)  # declared Content-Length

    def chunks():
        yield body[:1000]
        yield body[1000:]

    streamed = small_body_client.post("/v2/models/seed-lstm/infer", content=chunks())
    assert "2000" in error_of(streamed, 413)
    bomb = gzip.compress(b" " * 100_000 + body)
    assert len(bomb) < 2000
    response = infer(small_body_client, bomb, headers={"Content-Encoding": "gzip"})
    assert "decompressed" in error_of(response, 413)


def metric(client, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_v2_errors_and_timesteps_reach_the_metrics(client):
    errors = 'lstm_errors_total{code="session_not_found"}'
    steps = 'lstm_timesteps_total{model="simplernn-layernorm"}'
    errors_before, steps_before = metric(client, errors), metric(client, steps)

    x = np.zeros((1, 2, 2), dtype=np.float32)
    unknown = json_request(x, parameters={"sequence_id": f"never-{uuid.uuid4().hex}"})
    error_of(infer(client, unknown), 400)
    batch = np.zeros((4, 5, 3), dtype=np.float32)
    json_outputs(infer(client, json_request(batch), "simplernn-layernorm"))

    assert metric(client, errors) == errors_before + 1
    assert metric(client, steps) == steps_before + 4 * 5


def test_sequences_belong_to_their_api_key(client, settings):
    keyed = settings.model_copy(update={"api_keys": SecretStr("key-one,key-two")})
    with TestClient(create_app(keyed, registry=client.app.state.sessions.models)) as app:
        x = np.ones((1, 2, 2), dtype=np.float32)
        one, two = ({"Authorization": f"Bearer key-{n}"} for n in ("one", "two"))
        sequence = {"sequence_id": 5}
        start = json_request(x, parameters={**sequence, "sequence_start": True})
        assert infer(app, start, headers=one).status_code == 200

        following = json_request(x, parameters=sequence)
        assert "never started" in error_of(infer(app, following, headers=two), 400)
        assert error_of(infer(app, following), 401)
        assert infer(app, following, headers=one).json()["parameters"]["sequence_steps"] == 4
