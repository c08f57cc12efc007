"""JSON tensor bodies: the values a client wrote, rounded as Python rounds them, and nothing
that only looks like a T x F array once flattened."""

import json

import numpy as np
import pytest

from tests.streaming import new_session

# Whitespace after the document takes a small body past the size at which the service
# decodes JSON through simdjson's buffer, so that path is the one these tests judge.
PAD = " " * 4096


def written(rows: list[list[float]]) -> np.ndarray:
    # The reference: the standard library's float64, then numpy's float32 rounding.
    with np.errstate(over="ignore"):
        return np.array(rows, dtype=np.float64).astype(np.float32)


def test_a_json_chunk_is_the_bits_of_the_same_values_sent_as_float32(client):
    rng = np.random.default_rng(5)
    # Values across float32's range, ints, subnormals and more digits than float64 keeps.
    rows = (rng.normal(size=(300, 16)) * 10.0 ** rng.integers(-40, 38, size=(300, 16))).tolist()
    rows[0][:4] = [3, -0.0, 1.401298464324817e-45, 0.1000000000000000055511151231257827]
    text = json.dumps({"inputs": rows}).replace("1.401298464324817e-45", "1.4e-45")
    want = client.post(
        "/v1/models/sensor-lstm/predict",
        content=written(json.loads(text)["inputs"]).tobytes(),
        headers={"content-type": "application/octet-stream", "accept": "application/octet-stream"},
    )
    got = client.post(
        "/v1/models/sensor-lstm/predict",
        content=text,
        headers={"content-type": "application/json", "accept": "application/octet-stream"},
    )
    assert want.status_code == got.status_code == 200, got.text
    assert got.content == want.content


@pytest.mark.parametrize(
    "inputs",
    [
        "[[1, 2], [[3, 4], []]]",  # flattens to 2 x 2
        "[[1, 2], [[3], 4], 5]",  # flattens to 3 x 2, with a row that is a number
        "[[1, 2], [3]]",
        "[[1, 2], 3, 4]",
        "[[]]",
        "[]",
        '[[1, "2"]]',
        "[[1, true]]",
        "[[1, null]]",
        '[{"a": 1}]',
    ],
)
def test_inputs_that_are_not_rows_of_numbers_are_refused(client, inputs):
    session_id = new_session(client, "seed-lstm")
    body = '{"inputs": ' + inputs + ', "offset": 0}' + PAD
    response = client.post(
        f"/v1/sessions/{session_id}/predict",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert client.get(f"/v1/sessions/{session_id}").json()["steps"] == 0


@pytest.mark.parametrize(
    "tail",
    ['"offset": -1', '"offset": true', '"offset": 1.5', '"extra": 1'],
)
def test_a_chunk_with_a_wrong_field_is_refused(client, tail):
    session_id = new_session(client, "seed-lstm")
    response = client.post(
        f"/v1/sessions/{session_id}/predict",
        content='{"inputs": [[1, 2]], ' + tail + "}" + PAD,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert client.get(f"/v1/sessions/{session_id}").json()["steps"] == 0
