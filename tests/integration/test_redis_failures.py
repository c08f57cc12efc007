"""Redis stopped, killed, hung or refusing writes, under a real `lstm-serve` process."""

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from service.store.embedded import EmbeddedRedis
from tests.processes import ServiceProcess
from tests.streaming import new_session, post_chunk, predict, send_chunk

MODEL = "sensor-lstm"
TIMEOUT = 0.5
# Every call must come back well inside this, whatever Redis does. Measured answers are
# printed; the bound is generous so that a loaded machine cannot fail the test.
BOUND = 4 * TIMEOUT + 2.0


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[EmbeddedRedis]:
    """A Redis of this module's own, with a fixed data directory and port so that it can be
    stopped and started again on its AOF."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("failing-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def service(node, model_dir) -> Iterator[ServiceProcess]:
    env = {"LSTM_REDIS_TIMEOUT_SECONDS": str(TIMEOUT)}
    with ServiceProcess(node.url, model_dir, env=env) as process:
        yield process


@pytest.fixture(scope="module")
def http(service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        yield client


@pytest.fixture
def inputs() -> np.ndarray:
    return np.random.default_rng(17).normal(size=(40, 16)).astype(np.float32)


def admin(node: EmbeddedRedis) -> redis.Redis:
    return redis.Redis(port=node.port, socket_timeout=5)


def timed(call: Any, *args: Any, **kwargs: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call(*args, **kwargs)
    return response, time.monotonic() - started


def assert_store_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "store_unavailable"
    assert "outputs" not in response.json()
    assert int(response.headers["Retry-After"]) >= 1


def calls_while_down(
    http: httpx.Client, session_id: str, chunk: np.ndarray, offset: int, blind_writes: bool
) -> float:
    """Every session call is 503 `store_unavailable`, /readyz 503, /healthz 200; the
    slowest answer in seconds. `blind_writes` adds create and delete, which send their
    write without reading first: a hung Redis would still apply them once it wakes (as it
    may a chunk's compare-and-set against the record its process kept)."""
    slowest = 0.0
    calls = [
        partial(post_chunk, http, session_id, chunk, offset=offset),
        partial(post_chunk, http, session_id, chunk),
        partial(http.get, f"/v1/sessions/{session_id}"),
        partial(http.post, f"/v1/sessions/{session_id}/reset"),
    ]
    if blind_writes:
        calls += [
            partial(http.post, f"/v1/models/{MODEL}/sessions"),
            partial(http.delete, f"/v1/sessions/{session_id}"),
        ]
    for call in calls:
        response, elapsed = timed(call)
        assert_store_unavailable(response)
        slowest = max(slowest, elapsed)
    ready, elapsed = timed(http.get, "/readyz")
    assert ready.status_code == 503 and ready.headers["Retry-After"]
    assert ready.json()["checks"]["redis"] != "ok"
    assert http.get("/healthz").status_code == 200
    return max(slowest, elapsed)


def test_redis_stopped_mid_stream_then_restarted_on_its_aof(node, http, inputs):
    full = predict(http, MODEL, inputs)
    session_id = new_session(http, MODEL)
    first = send_chunk(http, session_id, inputs[:10], offset=0)
    send_chunk(http, session_id, inputs[10:17], offset=10)

    node.stop()  # SIGTERM: Redis writes its AOF out and exits (default appendfsync everysec)
    try:
        slowest = calls_while_down(http, session_id, inputs[17:25], 17, blind_writes=True)
        # The stateless predict needs no Redis and keeps working.
        assert np.array_equal(predict(http, MODEL, inputs), full)
        assert slowest < BOUND
    finally:
        node.start()

    # The same service process reconnects by itself; nothing was applied while Redis was down.
    assert http.get("/readyz").status_code == 200
    assert http.get(f"/v1/sessions/{session_id}").json()["steps"] == 17
    rest = send_chunk(http, session_id, inputs[17:], offset=17)
    assert rest["replayed"] is False
    assert np.array_equal(np.array(first["outputs"], np.float32), full[:10])
    assert np.array_equal(np.array(rest["outputs"], np.float32), full[17:])
    print(f"Redis stopped: slowest answer {slowest * 1000:.0f} ms")


def test_redis_killed_and_restarted_loses_no_acknowledged_chunk(node, http, inputs):
    # SIGKILL right after an answer: only `appendfsync always` makes that answer durable
    # without waiting; with `everysec` up to a second of writes may be lost (docs/guarantees.md).
    admin(node).config_set("appendfsync", "always")
    full = predict(http, MODEL, inputs)
    session_id = new_session(http, MODEL)
    send_chunk(http, session_id, inputs[:12], offset=0)
    last = send_chunk(http, session_id, inputs[12:20], offset=12)

    node.kill()
    node.start()

    # No readiness poll first: the very first call after the restart must find Redis.
    retry = send_chunk(http, session_id, inputs[12:20], offset=12)
    assert retry["replayed"] is True and retry["outputs"] == last["outputs"]
    assert http.get(f"/v1/sessions/{session_id}").json()["steps"] == 20
    rest = send_chunk(http, session_id, inputs[20:], offset=20)
    assert np.array_equal(np.array(rest["outputs"], np.float32), full[20:])


@contextmanager
def frozen(node: EmbeddedRedis) -> Iterator[None]:
    """Redis stopped with SIGSTOP: connections stay open and nothing answers."""
    pid = int(admin(node).info("server")["process_id"])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_hung_redis_answers_within_the_timeout_and_applies_nothing(node, http, inputs):
    full = predict(http, MODEL, inputs)
    session_id = new_session(http, MODEL)
    send_chunk(http, session_id, inputs[:8], offset=0)

    with frozen(node):
        slowest = calls_while_down(http, session_id, inputs[8:30], 8, blind_writes=False)

    assert slowest < BOUND
    # A process that holds the session's last record sends a chunk's compare-and-set without
    # reading first, so one of the two chunk writes may land when Redis wakes: at most one.
    assert http.get(f"/v1/sessions/{session_id}").json()["steps"] in (8, 30)
    resent = send_chunk(http, session_id, inputs[8:30], offset=8)
    assert (resent["offset"], resent["steps"]) == (8, 30)
    assert np.array_equal(np.array(resent["outputs"], np.float32), full[8:30])
    assert http.get(f"/v1/sessions/{session_id}").json()["steps"] == 30
    print(f"Redis hung, timeout {TIMEOUT}s: slowest answer {slowest * 1000:.0f} ms")


def test_a_chunk_whose_state_write_fails_returns_no_outputs(node, http, inputs):
    full = predict(http, MODEL, inputs)
    session_id = new_session(http, MODEL)
    send_chunk(http, session_id, inputs[:5], offset=0)

    # Reads still work, every write is refused (OOM under the noeviction policy).
    admin(node).config_set("maxmemory", 1)
    try:
        assert_store_unavailable(post_chunk(http, session_id, inputs[5:9], offset=5))
        assert http.get(f"/v1/sessions/{session_id}").json()["steps"] == 5
    finally:
        admin(node).config_set("maxmemory", 0)

    resent = send_chunk(http, session_id, inputs[5:9], offset=5)
    assert resent["replayed"] is False
    assert np.array_equal(np.array(resent["outputs"], np.float32), full[5:9])
