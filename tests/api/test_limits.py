"""Limits: body size (declared or streamed), timesteps per call, live sessions per API key."""

import time

import numpy as np
import pytest
import redis

from service.api.auth import namespace_of
from service.store.keys import namespace_index_key
from tests.apps import app_with
from tests.streaming import new_session, post_chunk, predict, send_chunk

KEY = "limits-key-0c1d"
OTHER = "limits-key-9e8f"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def small(client, settings):
    """Small limits: 2000-byte bodies, 5 steps per chunk, 8 per predict."""
    with app_with(
        client, settings, max_body_bytes=2000, max_chunk_steps=5, max_predict_steps=8
    ) as test_client:
        yield test_client


def big_body(rows: int) -> bytes:
    return ('{"inputs": [' + ",".join(["[0.5, 0.5]"] * rows) + "]}").encode()


def test_declared_body_over_the_limit_is_413_and_changes_nothing(small):
    session_id = new_session(small, "seed-lstm")
    body = big_body(400)
    assert len(body) > 2000
    response = small.post(
        f"/v1/sessions/{session_id}/predict",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "payload_too_large" and error["max_bytes"] == 2000
    assert small.get(f"/v1/sessions/{session_id}").json()["steps"] == 0


def test_streamed_body_without_content_length_is_413_and_changes_nothing(small):
    session_id = new_session(small, "seed-lstm")
    body = big_body(400)

    def chunked():
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    response = small.post(
        f"/v1/sessions/{session_id}/predict",
        content=chunked(),
        headers={"content-type": "application/json"},
    )
    sent_headers = response.request.headers
    assert "content-length" not in sent_headers
    assert sent_headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert small.get(f"/v1/sessions/{session_id}").json()["steps"] == 0


def test_a_streamed_body_under_the_limit_is_served(small):
    session_id = new_session(small, "seed-lstm")
    body = big_body(5)
    response = small.post(
        f"/v1/sessions/{session_id}/predict",
        content=iter([body[:10], body[10:]]),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["steps"] == 5


def test_timesteps_per_chunk(small):
    session_id = new_session(small, "seed-lstm")
    inputs = np.random.default_rng(3).normal(size=(6, 2)).astype(np.float32)
    too_many = post_chunk(small, session_id, inputs)
    assert too_many.status_code == 422
    assert too_many.json()["error"]["code"] == "invalid_input"
    assert small.get(f"/v1/sessions/{session_id}").json()["steps"] == 0
    body = send_chunk(small, session_id, inputs[:5], offset=0)
    expected = predict(small, "seed-lstm", inputs[:5])
    assert np.array_equal(np.array(body["outputs"], dtype=np.float32), expected)


def test_timesteps_per_stateless_call(small):
    inputs = np.ones((9, 2), dtype=np.float32)
    too_many = small.post("/v1/models/seed-lstm/predict", json={"inputs": inputs.tolist()})
    assert too_many.status_code == 422
    assert too_many.json()["error"]["code"] == "invalid_input"
    assert small.post(
        "/v1/models/seed-lstm/predict", json={"inputs": inputs[:8].tolist()}
    ).is_success


@pytest.fixture
def capped(client, settings):
    """Three live sessions per key."""
    with app_with(
        client, settings, api_keys=f"{KEY},{OTHER}", max_sessions_per_key=3
    ) as test_client:
        yield test_client


def create(test_client, key: str, **body):
    return test_client.post("/v1/models/seed-lstm/sessions", json=body or None, headers=bearer(key))


def fresh_key(redis_server, key: str) -> None:
    """Forget earlier tests' sessions of this key (their index and their session keys)."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        namespace = namespace_of(key)
        for name in client.scan_iter(match=f"lstm:session:{namespace}:*"):
            client.delete(name)
        client.delete(namespace_index_key(namespace))
    finally:
        client.close()


def test_sessions_per_key_are_capped_with_429(capped, redis_server):
    fresh_key(redis_server, KEY)
    fresh_key(redis_server, OTHER)
    ids = [create(capped, KEY).json()["session_id"] for _ in range(3)]
    refused = create(capped, KEY)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "too_many_sessions" and error["limit"] == 3
    # The refused session was not left behind, and other keys have their own count.
    assert create(capped, KEY, session_id="was-refused").status_code == 429
    assert capped.get("/v1/sessions/was-refused", headers=bearer(KEY)).status_code == 404
    assert create(capped, OTHER).status_code == 201
    # Deleting one frees its place.
    assert capped.delete(f"/v1/sessions/{ids[0]}", headers=bearer(KEY)).status_code == 204
    assert create(capped, KEY).status_code == 201
    assert create(capped, KEY).status_code == 429


def test_expired_sessions_free_their_place(capped, redis_server):
    fresh_key(redis_server, KEY)
    for _ in range(3):
        assert create(capped, KEY, ttl_seconds=1).status_code == 201
    assert create(capped, KEY).status_code == 429
    time.sleep(1.3)  # past the TTL: Redis reports the keys gone from then on
    assert create(capped, KEY).status_code == 201


def test_a_session_kept_alive_by_writes_still_counts(capped, redis_server):
    """The index records each session's first expiry; a write pushes the real one later.
    Simulate a lapsed record of a live session: it must be checked, not dropped."""
    fresh_key(redis_server, KEY)
    ids = [create(capped, KEY).json()["session_id"] for _ in range(3)]
    client = redis.Redis.from_url(redis_server.url)
    try:
        index = namespace_index_key(namespace_of(KEY))
        client.zadd(index, dict.fromkeys(ids, 1))  # recorded expiry long past
        assert create(capped, KEY).status_code == 429
        # The check moved the records to the sessions' real expiry.
        assert min(score for _, score in client.zrange(index, 0, -1, withscores=True)) > 1e12
        # A record of a session that is really gone is dropped.
        client.delete(f"lstm:session:{namespace_of(KEY)}:{ids[0]}")
        client.zadd(index, {ids[0]: 1})
        assert create(capped, KEY).status_code == 201
    finally:
        client.close()


def test_zero_means_no_limit(client, settings):
    with app_with(client, settings, max_sessions_per_key=0) as unlimited:
        for _ in range(5):
            assert unlimited.post("/v1/models/seed-lstm/sessions").status_code == 201
