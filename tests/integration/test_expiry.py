"""Session expiry: past its TTL a session is gone (404), and every write starts the TTL again."""

import time
from collections.abc import Iterator
from datetime import datetime

import numpy as np
import pytest
import redis

from service.store.keys import session_key
from tests.streaming import new_session, post_chunk, send_chunk

MODEL = "seed-lstm"
CHUNK = np.array([[0.5, -1.0], [1.0, 0.25]], dtype=np.float32)


@pytest.fixture(scope="module")
def admin(redis_server) -> Iterator[redis.Redis]:
    with redis.Redis(port=redis_server.port) as client:
        yield client


def pttl(admin: redis.Redis, session_id: str) -> int:
    """Milliseconds the session's key has left in Redis (-2: gone)."""
    return int(admin.pttl(session_key("_", session_id)))


def wait_until_gone(admin: redis.Redis, session_id: str, deadline_seconds: float = 10) -> None:
    deadline = time.monotonic() + deadline_seconds
    while pttl(admin, session_id) != -2:
        assert time.monotonic() < deadline, "the session outlived its TTL"
        time.sleep(0.05)


def expires_at(client, session_id: str) -> datetime:
    return datetime.fromisoformat(
        client.get(f"/v1/sessions/{session_id}").json()["expires_at"].replace("Z", "+00:00")
    )


def test_a_session_past_its_ttl_is_session_not_found(client, admin):
    session_id = new_session(client, MODEL, ttl_seconds=1)
    assert 0 < pttl(admin, session_id) <= 1000
    send_chunk(client, session_id, CHUNK, offset=0)

    wait_until_gone(admin, session_id)

    for response in (
        client.get(f"/v1/sessions/{session_id}"),
        post_chunk(client, session_id, CHUNK),
        post_chunk(client, session_id, CHUNK, offset=2),
        client.post(f"/v1/sessions/{session_id}/reset"),
        client.delete(f"/v1/sessions/{session_id}"),
    ):
        assert response.status_code == 404, (response.request.method, response.request.url)
        assert response.json()["error"]["code"] == "session_not_found"
    # Never silently a fresh session: the predict above created nothing.
    assert pttl(admin, session_id) == -2


@pytest.mark.parametrize("write", ["predict", "reset"])
def test_a_write_starts_the_ttl_again(client, admin, write):
    session_id = new_session(client, MODEL, ttl_seconds=3)
    send_chunk(client, session_id, CHUNK, offset=0)
    before, expiry_before = pttl(admin, session_id), expires_at(client, session_id)
    time.sleep(0.6)
    aged = pttl(admin, session_id)
    assert 0 < aged <= before - 500

    if write == "predict":
        send_chunk(client, session_id, CHUNK, offset=2)
    else:
        assert client.post(f"/v1/sessions/{session_id}/reset").status_code == 200

    refreshed = pttl(admin, session_id)
    assert aged + 500 <= refreshed <= 3000
    assert expires_at(client, session_id) > expiry_before


def test_a_session_written_to_outlives_its_ttl(client, admin):
    session_id = new_session(client, MODEL, ttl_seconds=2)
    started = time.monotonic()
    offset = 0
    while time.monotonic() - started < 4:  # twice the TTL
        send_chunk(client, session_id, CHUNK, offset=offset)
        offset += len(CHUNK)
        assert pttl(admin, session_id) > 1500
        time.sleep(0.3)

    assert client.get(f"/v1/sessions/{session_id}").json()["steps"] == offset


def test_a_new_session_gets_the_default_ttl(client, admin, settings):
    session_id = new_session(client, MODEL)
    default_ms = settings.session_ttl_seconds * 1000
    assert default_ms - 5000 < pttl(admin, session_id) <= default_ms


def test_a_ttl_over_the_limit_is_invalid_input(client, settings):
    response = client.post(
        f"/v1/models/{MODEL}/sessions", json={"ttl_seconds": settings.max_session_ttl_seconds + 1}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"
