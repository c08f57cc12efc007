"""Offsets and replay: a chunk is applied once, a retry is answered again, nothing else is."""

from typing import Any

import numpy as np
import pytest

from tests.streaming import new_session, post_chunk, predict, send_chunk

MODEL = "sensor-lstm"


@pytest.fixture
def inputs() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(24, 16)).astype(np.float32)


def steps_of(client: Any, session_id: str) -> int:
    response = client.get(f"/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    steps: int = response.json()["steps"]
    return steps


def refused(client: Any, session_id: str, chunk: np.ndarray, **extra: Any) -> dict[str, Any]:
    response = post_chunk(client, session_id, chunk, **extra)
    assert response.status_code == 409, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "offset_conflict"
    return error


def as_array(body: dict[str, Any]) -> np.ndarray:
    return np.array(body["outputs"], dtype=np.float32)


def test_chunk_at_the_session_steps_is_applied(client, inputs):
    full = predict(client, MODEL, inputs)
    session_id = new_session(client, MODEL)

    body = send_chunk(client, session_id, inputs[:5], offset=0)

    assert (body["offset"], body["steps"], body["replayed"]) == (0, 5, False)
    assert np.array_equal(as_array(body), full[:5])
    assert steps_of(client, session_id) == 5


def test_identical_retry_is_replayed_and_leaves_the_state_untouched(client, inputs):
    full = predict(client, MODEL, inputs)
    session_id = new_session(client, MODEL)
    send_chunk(client, session_id, inputs[:4], offset=0)
    first = send_chunk(client, session_id, inputs[4:10], offset=4)

    for _ in range(3):
        retry = send_chunk(client, session_id, inputs[4:10], offset=4)
        assert (retry["offset"], retry["steps"], retry["replayed"]) == (4, 10, True)
        assert retry["outputs"] == first["outputs"]
    assert steps_of(client, session_id) == 10

    # Had a replay advanced the state, the rest of the stream would differ from the contract.
    rest = send_chunk(client, session_id, inputs[10:], offset=10)
    assert rest["replayed"] is False
    assert np.array_equal(as_array(first), full[4:10])
    assert np.array_equal(as_array(rest), full[10:])


@pytest.mark.parametrize("offset", [0, 3, 8, 10, 1000])
def test_any_other_offset_is_offset_conflict_carrying_steps(client, inputs, offset):
    full = predict(client, MODEL, inputs)
    session_id = new_session(client, MODEL)
    send_chunk(client, session_id, inputs[:3], offset=0)
    send_chunk(client, session_id, inputs[3:9], offset=3)

    # 0 and 3 start earlier chunks (other inputs now), 8 is inside the last chunk, 10 and
    # 1000 leave a gap: none may be applied.
    error = refused(client, session_id, inputs[9:12], offset=offset)

    assert error["steps"] == 9
    assert steps_of(client, session_id) == 9
    rest = send_chunk(client, session_id, inputs[9:], offset=9)
    assert np.array_equal(as_array(rest), full[9:])


def test_an_older_chunk_resent_identically_is_refused_not_replayed(client, inputs):
    session_id = new_session(client, MODEL)
    send_chunk(client, session_id, inputs[:3], offset=0)
    send_chunk(client, session_id, inputs[3:6], offset=3)

    assert refused(client, session_id, inputs[:3], offset=0)["steps"] == 6


def test_same_offset_with_other_inputs_is_a_conflict(client, inputs):
    session_id = new_session(client, MODEL)
    first = send_chunk(client, session_id, inputs[:6], offset=0)

    changed = inputs[:6].copy()
    changed[5, 0] = np.nextafter(changed[5, 0], np.float32(np.inf))
    assert refused(client, session_id, changed, offset=0)["steps"] == 6
    assert refused(client, session_id, inputs[:5], offset=0)["steps"] == 6

    retry = send_chunk(client, session_id, inputs[:6], offset=0)
    assert retry["replayed"] is True and retry["outputs"] == first["outputs"]


def test_without_offset_chunks_are_appended_and_can_be_retried_by_their_offset(client, inputs):
    full = predict(client, MODEL, inputs)
    session_id = new_session(client, MODEL)

    start = 0
    for size in (2, 5, 1, 4):
        body = send_chunk(client, session_id, inputs[start : start + size])
        assert (body["offset"], body["steps"], body["replayed"]) == (start, start + size, False)
        assert np.array_equal(as_array(body), full[start : start + size])
        start += size

    # The last append, retried with the offset the server acknowledged, is a replay.
    retry = send_chunk(client, session_id, inputs[8:12], offset=8)
    assert retry["replayed"] is True
    assert np.array_equal(as_array(retry), full[8:12])
    mixed = send_chunk(client, session_id, inputs[12:], offset=12)
    assert np.array_equal(as_array(mixed), full[12:])


def test_invalid_chunk_with_a_valid_offset_changes_nothing(client, inputs):
    full = predict(client, MODEL, inputs)
    session_id = new_session(client, MODEL)
    send_chunk(client, session_id, inputs[:4], offset=0)

    response = client.post(
        f"/v1/sessions/{session_id}/predict", json={"inputs": [[1.0] * 15], "offset": 4}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"

    assert steps_of(client, session_id) == 4
    retry = send_chunk(client, session_id, inputs[:4], offset=0)
    assert retry["replayed"] is True
    assert np.array_equal(as_array(send_chunk(client, session_id, inputs[4:], offset=4)), full[4:])


def test_reset_forgets_the_last_chunk(client, inputs):
    session_id = new_session(client, MODEL)
    first = send_chunk(client, session_id, inputs[:5], offset=0)
    assert client.post(f"/v1/sessions/{session_id}/reset").status_code == 200

    # After a reset offset 0 is the next chunk again: applied afresh, not a replay.
    again = send_chunk(client, session_id, inputs[:5], offset=0)
    assert again["replayed"] is False
    assert again["outputs"] == first["outputs"]
    assert refused(client, session_id, inputs[:5], offset=5 + 5)["steps"] == 5


def test_last_step_model_replays_its_single_output(client):
    model = "lstm-last-step"
    inputs = np.random.default_rng(8).normal(size=(9, 4)).astype(np.float32)
    session_id = new_session(client, model)
    send_chunk(client, session_id, inputs[:4], offset=0)
    first = send_chunk(client, session_id, inputs[4:], offset=4)

    retry = send_chunk(client, session_id, inputs[4:], offset=4)

    assert retry["replayed"] is True and retry["outputs"] == first["outputs"]
    assert np.array_equal(as_array(retry), predict(client, model, inputs))
