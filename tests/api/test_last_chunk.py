"""The last chunk of a session or sequence can always be retried, and costs no memory.

A replay recomputes the chunk from the state stored before it (the runner is deterministic),
so a session's record is about twice its state whatever the chunk length; and the chunk
that ends a V2 sequence leaves a short-lived tombstone that answers its retry.
"""

import uuid

import numpy as np
import redis

from service.core.sequences import sequence_session_id
from service.core.sessions import ENDED_SEQUENCE_SECONDS
from service.store.keys import session_key
from tests.api.test_v2 import infer, json_outputs, json_request
from tests.streaming import new_session, predict, send_chunk

DEFAULT_NAMESPACE = "_"


def test_a_long_last_chunk_replays_bit_for_bit_from_a_record_twice_the_state(client, redis_server):
    x = np.random.default_rng(31).normal(size=(2000, 16)).astype(np.float32)
    session_id = new_session(client, "sensor-lstm")
    send_chunk(client, session_id, x[:7], offset=0)
    first = send_chunk(client, session_id, x[7:], offset=7)
    again = send_chunk(client, session_id, x[7:], offset=7)

    assert again["replayed"] is True and again["steps"] == 2000
    reference = predict(client, "sensor-lstm", x)[7:]
    assert np.array(again["outputs"], np.float32).tobytes() == reference.tobytes()
    assert again["outputs"] == first["outputs"]
    state_bytes = client.get("/v1/models/sensor-lstm").json()["state_bytes"]
    stored = redis.Redis.from_url(redis_server.url).strlen(
        session_key(DEFAULT_NAMESPACE, session_id)
    )
    # Format 1 kept the chunk's 1,993 x 8 outputs here: 63,776 bytes more.
    assert 2 * state_bytes < stored < 2 * state_bytes + 200


def sequence_chunk(client, x, sequence_id, offset, **flags):
    parameters = {"sequence_id": sequence_id, "sequence_offset": offset, **flags}
    return infer(client, json_request(x[None], parameters=parameters))


def test_the_chunk_that_ends_a_sequence_can_be_retried(client):
    x = np.random.default_rng(32).normal(size=(6, 2)).astype(np.float32)
    sequence_id = f"end-{uuid.uuid4().hex}"
    sequence_chunk(client, x[:4], sequence_id, 0, sequence_start=True)
    ended = sequence_chunk(client, x[4:], sequence_id, 4, sequence_end=True)
    retried = sequence_chunk(client, x[4:], sequence_id, 4, sequence_end=True)

    assert retried.json()["parameters"]["sequence_replayed"] is True
    assert json_outputs(retried).tobytes() == json_outputs(ended).tobytes()
    reference = predict(client, "seed-lstm", x)[4:]
    assert json_outputs(retried)[0].tobytes() == reference.tobytes()
    # Anything but that retry finds the sequence ended, as before.
    for offset, chunk in ((6, x[:1]), (4, x[:2]), (None, x[4:])):
        response = sequence_chunk(client, chunk, sequence_id, offset)
        assert response.status_code == 400 and "never started" in response.json()["error"]
    # And it can be started again, from zero state.
    restarted = sequence_chunk(client, x, sequence_id, 0, sequence_start=True)
    assert json_outputs(restarted)[0].tobytes() == predict(client, "seed-lstm", x).tobytes()


def test_an_ended_sequence_lives_only_as_long_as_its_tombstone(client, redis_server):
    # The tombstone answers one retry for ENDED_SEQUENCE_SECONDS, then Redis drops it: it
    # must not keep the session's own (default: a day) time to live.
    x = np.random.default_rng(33).normal(size=(3, 2)).astype(np.float32)
    sequence_id = f"ttl-{uuid.uuid4().hex}"
    sequence_chunk(client, x[:2], sequence_id, 0, sequence_start=True)
    store = redis.Redis.from_url(redis_server.url)
    key = session_key(DEFAULT_NAMESPACE, sequence_session_id("seed-lstm", sequence_id))
    assert store.pttl(key) > 3_600_000
    sequence_chunk(client, x[2:], sequence_id, 2, sequence_end=True)
    assert 0 < store.pttl(key) <= ENDED_SEQUENCE_SECONDS * 1000
