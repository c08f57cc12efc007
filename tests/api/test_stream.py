"""`GET /v1/sessions/{id}/stream`: the chunk route's contract, one WebSocket message each way."""

import json

import numpy as np
import pytest
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from tests.apps import app_with
from tests.streaming import new_session, predict, send_chunk

SEED = "seed-lstm"
# The Keras question's sequence and LSTM(1): the published outputs, through this service.
SEED_INPUTS = np.array([[0, 0], [0, 1], [0, 0], [1, 1]], dtype=np.float32)
KEYS = ("ws-key-a1", "ws-key-b2")


def frame(rows: np.ndarray) -> bytes:
    return rows.astype("<f4").tobytes()


def floats(message: bytes) -> np.ndarray:
    return np.frombuffer(message, dtype="<f4").reshape(-1, 1)


def test_json_messages_are_answered_like_the_chunk_route(client):
    session_id = new_session(client, SEED)
    expected = predict(client, SEED, SEED_INPUTS)
    with client.websocket_connect(f"/v1/sessions/{session_id}/stream") as ws:
        ws.send_text(json.dumps({"inputs": SEED_INPUTS[:2].tolist(), "offset": 0}))
        first = ws.receive_json()
        ws.send_text(json.dumps({"inputs": SEED_INPUTS[2:].tolist(), "offset": 2}))
        second = ws.receive_json()
    assert (first["offset"], first["steps"], first["replayed"]) == (0, 2, False)
    assert (second["offset"], second["steps"], second["replayed"]) == (2, 4, False)
    outputs = np.array(first["outputs"] + second["outputs"], dtype=np.float32)
    assert np.array_equal(outputs, expected)


def test_errors_are_messages_and_the_socket_serves_the_next_chunk(client):
    session_id = new_session(client, SEED)
    with client.websocket_connect(f"/v1/sessions/{session_id}/stream") as ws:
        ws.send_text(json.dumps({"inputs": [[1, 2, 3]], "offset": 0}))
        assert ws.receive_json()["error"]["code"] == "invalid_input"
        ws.send_text("{not json")
        assert ws.receive_json()["error"]["code"] == "invalid_input"
        ws.send_bytes(b"\x00" * 12)  # 3 floats: not whole rows of 2 features
        assert ws.receive_json()["error"]["code"] == "invalid_input"
        ws.send_text(json.dumps({"inputs": [[0, 0]], "offset": 5}))
        conflict = ws.receive_json()["error"]
        assert conflict["code"] == "offset_conflict" and conflict["steps"] == 0
        ws.send_text(json.dumps({"inputs": [[0, 0]], "offset": 0}))
        assert ws.receive_json()["steps"] == 1
    assert client.get(f"/v1/sessions/{session_id}").json()["steps"] == 1


def test_binary_frames_take_their_offset_from_the_socket_and_replay_after_a_reconnect(client):
    # Exactly once over binary frames: the first frame's offset is `?offset=n`, the next
    # ones follow on; a client that lost an answer reconnects at that chunk's offset and
    # gets the stored answer, without the chunk being applied twice.
    session_id = new_session(client, SEED)
    expected = predict(client, SEED, SEED_INPUTS)
    path = f"/v1/sessions/{session_id}/stream"
    with client.websocket_connect(f"{path}?offset=0") as ws:
        ws.send_bytes(frame(SEED_INPUTS[:1]))
        first = floats(ws.receive_bytes())
        ws.send_bytes(frame(SEED_INPUTS[1:3]))
        lost = floats(ws.receive_bytes())
    with client.websocket_connect(f"{path}?offset=1") as ws:
        ws.send_bytes(frame(SEED_INPUTS[1:3]))
        replayed = floats(ws.receive_bytes())
        ws.send_bytes(frame(SEED_INPUTS[3:]))
        last = floats(ws.receive_bytes())
    assert np.array_equal(replayed, lost)
    assert np.array_equal(np.concatenate([first, replayed, last]), expected)
    assert client.get(f"/v1/sessions/{session_id}").json()["steps"] == 4


def test_an_unknown_session_refuses_the_handshake_with_the_error_body(client):
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        client.websocket_connect("/v1/sessions/no-such-session/stream"),
    ):
        pass
    assert refused.value.status_code == 404
    assert refused.value.json()["error"]["code"] == "session_not_found"


def test_a_session_deleted_mid_stream_ends_the_socket_after_the_error(client):
    session_id = new_session(client, SEED)
    with client.websocket_connect(f"/v1/sessions/{session_id}/stream") as ws:
        assert client.delete(f"/v1/sessions/{session_id}").status_code == 204
        ws.send_text(json.dumps({"inputs": [[0, 0]]}))
        assert ws.receive_json()["error"]["code"] == "session_not_found"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 4404


@pytest.fixture(scope="module")
def secured(client, settings):
    with app_with(client, settings, api_keys=",".join(KEYS)) as test_client:
        yield test_client


def test_api_keys_guard_the_stream_and_each_key_sees_only_its_sessions(secured):
    owner = {"Authorization": f"Bearer {KEYS[0]}"}
    other = {"Authorization": f"Bearer {KEYS[1]}"}
    session_id = new_session(_With(secured, owner), SEED)
    path = f"/v1/sessions/{session_id}/stream"
    for headers, status in (({}, 401), (other, 404)):
        with (
            pytest.raises(WebSocketDenialResponse) as refused,
            secured.websocket_connect(path, headers=headers),
        ):
            pass
        assert refused.value.status_code == status
    with secured.websocket_connect(path, headers=owner) as ws:
        ws.send_text(json.dumps({"inputs": [[0, 1]], "offset": 0}))
        assert ws.receive_json()["steps"] == 1
    assert send_chunk(_With(secured, owner), session_id, SEED_INPUTS[:1])["steps"] == 2


class _With:
    """`secured` with the owner's key on every request (for the shared helpers)."""

    def __init__(self, client, headers):
        self.client, self.headers = client, headers

    def post(self, path, headers=None, **kwargs):
        return self.client.post(path, headers={**self.headers, **(headers or {})}, **kwargs)


def test_a_socket_never_answers_from_a_stale_view_of_its_session(client):
    # The socket remembers the record it last saw to save a read; chunks written by
    # another connection meanwhile must still be seen: no double application, replays
    # and appends decided on the stored record.
    session_id = new_session(client, SEED)
    expected = predict(client, SEED, SEED_INPUTS)
    with client.websocket_connect(f"/v1/sessions/{session_id}/stream") as ws:
        send_chunk(client, session_id, SEED_INPUTS[:2], offset=0)  # over HTTP, meanwhile
        ws.send_text(json.dumps({"inputs": SEED_INPUTS[:2].tolist(), "offset": 0}))
        replay = ws.receive_json()
        ws.send_bytes(frame(SEED_INPUTS[2:3]))  # no offset known: appended at step 2
        appended = floats(ws.receive_bytes())
        send_chunk(client, session_id, SEED_INPUTS[3:], offset=3)
        ws.send_text(json.dumps({"inputs": [[9, 9]], "offset": 3}))  # the socket's next step
        late = ws.receive_json()
    assert replay["replayed"] is True and replay["steps"] == 2
    assert np.array_equal(np.array(replay["outputs"], dtype=np.float32), expected[:2])
    assert np.array_equal(appended, expected[2:3])
    assert late["error"]["code"] == "offset_conflict" and late["error"]["steps"] == 4
    assert client.get(f"/v1/sessions/{session_id}").json()["steps"] == 4


def test_a_message_over_the_body_limit_is_refused_like_a_body(client, settings):
    with app_with(client, settings, max_body_bytes=1000) as small:
        session_id = new_session(small, SEED)
        with small.websocket_connect(f"/v1/sessions/{session_id}/stream?offset=0") as ws:
            ws.send_bytes(frame(np.zeros((200, 2), dtype=np.float32)))  # 1600 bytes
            assert ws.receive_json()["error"]["code"] == "payload_too_large"
            ws.send_bytes(frame(SEED_INPUTS[:1]))
            assert np.array_equal(floats(ws.receive_bytes()), predict(small, SEED, SEED_INPUTS[:1]))
