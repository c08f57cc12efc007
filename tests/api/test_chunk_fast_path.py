"""The chunk route's fast path answers every request exactly as FastAPI's route does.

The same requests go to the app with the fast path (the default) and without it; each
answer (status, body, chunk headers) must be the same, errors included, and the chunks'
outputs those of the stateless predict of the whole sequence."""

import json

import numpy as np
import pytest

from service.api.fast_path import ChunkFastPath
from tests.apps import app_with
from tests.streaming import predict

SEED = "seed-lstm"
SEED_INPUTS = np.array([[0, 0], [0, 1], [0, 0], [1, 1]], dtype=np.float32)
MAX_BODY = 400
OCTET = {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"}


def chunk_json(rows: np.ndarray, **extra: object) -> bytes:
    return json.dumps({"inputs": rows.tolist(), **extra}).encode()


def many_json(session_id: str) -> bytes:
    chunks = [
        {"session_id": session_id, "inputs": [[1, 0]]},
        {"session_id": "not-a-session", "inputs": [[0, 0]]},
    ]
    return json.dumps({"chunks": chunks}).encode()


def script(session_id: str) -> list[tuple[str, bytes, dict[str, str]]]:
    """(path, body, headers): chunks, a replay, conflicts, bad input, paths FastAPI refuses."""
    route = f"/v1/sessions/{session_id}/predict"
    json_type = {"Content-Type": "application/json"}
    return [
        (route, chunk_json(SEED_INPUTS[:2], offset=0), json_type),
        (route, chunk_json(SEED_INPUTS[:2], offset=0), json_type),  # replayed
        (route, chunk_json(SEED_INPUTS[2:], offset=5), json_type),  # offset_conflict
        (route, b'{"inputs": [[0, 0]], "offset": 2, "extra": 1}', json_type),
        (route, b"{not json", json_type),
        (route + "?offset=-1", SEED_INPUTS[2:3].astype("<f4").tobytes(), OCTET),
        (route + "?offset=1&other=2", SEED_INPUTS[2:3].astype("<f4").tobytes(), OCTET),
        (route + "?offset=2", SEED_INPUTS[2:3].astype("<f4").tobytes(), OCTET),
        (route, chunk_json(SEED_INPUTS[3:]), json_type),  # no offset: appended
        (route, chunk_json(np.zeros((40, 2), np.float32)), json_type),  # over MAX_BODY
        ("/v1/sessions/not-a-session/predict", chunk_json(SEED_INPUTS[:1]), json_type),
        ("/v1/sessions/bad%20id/predict", chunk_json(SEED_INPUTS[:1]), json_type),
        (route + "/", chunk_json(SEED_INPUTS[:1]), json_type),
        ("/v1/chunks", many_json(session_id), json_type),  # one answer, one error
        ("/v1/chunks", b'{"chunks": []}', json_type),
        ("/v1/chunks", b"{not json", json_type),
        ("/v1/chunks?x=1", many_json(session_id), json_type),  # FastAPI's: a query it ignores
        ("/v1/chunks/", many_json(session_id), json_type),
    ]


def answers(client, session_id: str) -> list[tuple[int, str, dict[str, str], object]]:
    found = []
    for path, body, headers in script(session_id):
        response = client.post(path, content=body, headers=headers, follow_redirects=False)
        chunk_headers = {k: response.headers.get(k, "") for k in ("offset", "steps", "replayed")}
        kind = response.headers.get("content-type", "")
        payload: object = response.content
        if kind == "application/json":  # each app has its own session id
            payload = json.loads(response.text.replace(session_id, "<session>"))
        found.append((response.status_code, kind, chunk_headers, payload))
    return found


@pytest.fixture(scope="module")
def both(client, settings):
    with (
        app_with(client, settings, max_body_bytes=MAX_BODY) as fast,
        app_with(client, settings, max_body_bytes=MAX_BODY, chunk_fast_path=False) as plain,
    ):
        yield fast, plain


def test_each_answer_is_the_routes_own(both):
    fast, plain = both
    assert any(m.cls is ChunkFastPath for m in fast.app.user_middleware)
    assert not any(m.cls is ChunkFastPath for m in plain.app.user_middleware)
    by_path = []
    for app in (fast, plain):
        session = app.post(f"/v1/models/{SEED}/sessions").json()["session_id"]
        by_path.append(answers(app, session))
    assert by_path[0] == by_path[1]
    statuses = [status for status, *_ in by_path[0]]
    assert statuses[:13] == [200, 200, 409, 422, 422, 422, 409, 200, 200, 413, 404, 422, 307]
    assert statuses[13:] == [200, 422, 422, 200, 307]
    many = by_path[0][13][3]
    assert [sorted(result) for result in many["results"]] == [  # type: ignore[index]
        ["offset", "outputs", "replayed", "session_id", "steps"],
        ["error", "session_id"],
    ]


def test_the_fast_path_streams_the_stateless_outputs(both, client):
    fast, _ = both
    expected = predict(client, SEED, SEED_INPUTS)
    session = fast.post(f"/v1/models/{SEED}/sessions").json()["session_id"]
    outputs = []
    for offset in range(len(SEED_INPUTS)):
        rows = SEED_INPUTS[offset : offset + 1]
        answer = fast.post(f"/v1/sessions/{session}/predict", content=chunk_json(rows))
        assert answer.status_code == 200, answer.text
        outputs.extend(answer.json()["outputs"])
    assert np.array_equal(np.array(outputs, dtype=np.float32), expected)
