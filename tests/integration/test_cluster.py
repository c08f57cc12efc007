"""The service on a 3-master Redis Cluster: sessions spread over the masters, and streaming
stays bit-exact and exactly-once across an in-process app and an `lstm-serve` process."""

import asyncio
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from service.store.keys import session_key
from service.store.redis_store import RedisStateStore
from tests.cluster import LocalCluster
from tests.processes import ServiceProcess
from tests.racing import (
    append_concurrently,
    in_acknowledged_order,
    race_for_offset,
    random_chunks,
    replay_through_fresh_session,
)
from tests.streaming import new_session, post_chunk, predict, random_chunking, send_chunk

MODELS = {"sensor-lstm": 16, "gru-lstm-dense": 5, "simplernn-layernorm": 3, "gru-functional": 6}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture(scope="module")
def app_client(cluster, client, model_dir) -> Iterator[TestClient]:
    """The app in this process, configured by a `redis+cluster://` URL."""
    settings = Settings(redis_url=cluster.url, model_dir=model_dir)
    registry = client.app.state.sessions.models  # already loaded by the session fixture
    with TestClient(create_app(settings, registry)) as app_client:
        yield app_client


@pytest.fixture(scope="module")
def process(cluster, model_dir, tmp_path_factory) -> Iterator[ServiceProcess]:
    """A real `lstm-serve`, configured by a plain seed URL and `LSTM_REDIS_CLUSTER=true`."""
    log = tmp_path_factory.mktemp("cluster-serve") / "lstm-serve.log"
    env = {"LSTM_REDIS_CLUSTER": "true"}
    with ServiceProcess(cluster.seed_url, model_dir, env=env, log_path=log) as p:
        yield p


@pytest.fixture(scope="module")
def process_client(process) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=process.url, timeout=60) as http:
        yield http


def test_the_store_reads_a_cluster_url_and_pings_every_master(cluster):
    async def check() -> None:
        store = RedisStateStore.from_url(cluster.url, 2.0)
        try:
            assert type(store.client).__name__ == "RedisCluster"
            await store.ping()
            masters = store.client.get_primaries()
            assert sorted(node.port for node in masters) == sorted(n.port for n in cluster.nodes)
        finally:
            await store.close()

    asyncio.run(check())


def test_both_deployments_are_ready(app_client, process_client):
    for http in (app_client, process_client):
        response = http.get("/readyz")
        assert response.status_code == 200, response.text
        assert response.json()["checks"]["redis"] == "ok"


def test_sessions_spread_over_the_masters(cluster, app_client):
    for index in range(60):
        new_session(app_client, "seed-lstm", session_id=f"spread-{index}")

    counts = cluster.keys_per_master("lstm:session:*:spread-*")

    assert sum(counts.values()) == 60
    assert all(count > 0 for count in counts.values()), counts
    print(f"60 sessions over the masters: {sorted(counts.values())}")


@pytest.mark.parametrize("model", sorted(MODELS))
def test_chunks_alternating_between_two_deployments_are_bit_identical(
    app_client, process_client, model
):
    rng = np.random.default_rng(len(model))
    inputs = rng.normal(size=(180, MODELS[model])).astype(np.float32)
    full = predict(app_client, model, inputs)
    assert np.array_equal(predict(process_client, model, inputs), full)

    for _ in range(2):
        session_id = new_session(process_client, model)
        start = 0
        for index, size in enumerate(random_chunking(len(inputs), rng, largest=30)):
            http = (app_client, process_client)[index % 2]
            body = send_chunk(http, session_id, inputs[start : start + size], offset=start)
            assert body["offset"] == start and body["replayed"] is False
            assert np.array_equal(np.array(body["outputs"], np.float32), full[start : start + size])
            start += size


def test_replay_and_offset_conflict_on_the_cluster(app_client, process_client):
    inputs = np.random.default_rng(4).normal(size=(12, 16)).astype(np.float32)
    session_id = new_session(app_client, "sensor-lstm")
    first = send_chunk(app_client, session_id, inputs[:7], offset=0)

    retry = send_chunk(process_client, session_id, inputs[:7], offset=0)
    assert retry["replayed"] is True and retry["outputs"] == first["outputs"]
    stale = post_chunk(process_client, session_id, inputs[7:], offset=3)
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "offset_conflict"
    assert stale.json()["error"]["steps"] == 7


def test_concurrent_writers_on_the_cluster(process, process_client):
    rng = np.random.default_rng(5)
    plans = [random_chunks(rng, 3, 16) for _ in range(32)]
    session_id = new_session(process_client, "sensor-lstm")

    acks = asyncio.run(append_concurrently([process.url], session_id, plans))

    total = sum(len(chunk) for plan in plans for chunk in plan)
    assert process_client.get(f"/v1/sessions/{session_id}").json()["steps"] == total
    ordered = in_acknowledged_order(acks)
    for ack, answer in replay_through_fresh_session(process.url, "sensor-lstm", ordered):
        assert answer == ack.outputs

    racers = random_chunks(rng, 16, 16)
    responses = asyncio.run(race_for_offset([process.url], session_id, racers, total))
    assert sum(response.status_code == 200 for response in responses) == 1
    assert all(response.status_code in (200, 409) for response in responses)


def test_a_master_down_is_503_and_its_sessions_continue_after_its_restart(
    cluster, app_client, process_client
):
    """Last in this module: it stops and restarts a master (on its AOF and nodes.conf)."""
    inputs = np.random.default_rng(6).normal(size=(20, 16)).astype(np.float32)
    full = predict(app_client, "sensor-lstm", inputs)
    victim = cluster.nodes[1]
    by_node: dict[int, str] = {}
    while len(by_node) < len(cluster.nodes):
        session_id = new_session(app_client, "sensor-lstm")
        by_node.setdefault(cluster.node_holding(session_key("_", session_id)).port, session_id)
    for session_id in by_node.values():
        send_chunk(app_client, session_id, inputs[:8], offset=0)

    victim.stop()
    try:
        for http in (app_client, process_client):
            response = post_chunk(http, by_node[victim.port], inputs[8:], offset=8)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "store_unavailable"
            assert response.headers["Retry-After"]
            assert http.get("/readyz").status_code == 503
            assert http.get("/healthz").status_code == 200
    finally:
        victim.start()
        cluster.wait_until_ok()

    for http in (app_client, process_client):
        deadline = time.monotonic() + 30
        while http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "not ready after the master came back"
            time.sleep(0.2)
    for index, session_id in enumerate(by_node.values()):
        http = (app_client, process_client)[index % 2]
        assert http.get(f"/v1/sessions/{session_id}").json()["steps"] == 8
        rest = send_chunk(http, session_id, inputs[8:], offset=8)
        assert np.array_equal(np.array(rest["outputs"], np.float32), full[8:])


def test_many_sessions_in_one_request_span_every_master(app_client, cluster):
    """`POST /v1/chunks` reads and writes sessions in every slot range of the cluster
    (per-slot reads, one script call per key): each answer is the single route's."""
    rng = np.random.default_rng(40)
    batched = [new_session(app_client, "sensor-lstm") for _ in range(12)]
    single = [new_session(app_client, "sensor-lstm") for _ in batched]
    chunks = [rng.normal(size=(2, 16)).astype(np.float32) for _ in batched]
    body = {
        "chunks": [
            {"session_id": s, "inputs": c.tolist(), "offset": 0}
            for s, c in zip(batched, chunks, strict=True)
        ]
    }

    response = app_client.post("/v1/chunks", json=body)

    assert response.status_code == 200, response.text
    assert len({cluster.node_holding(session_key("_", s)).port for s in batched}) > 1
    for result, s, c in zip(response.json()["results"], single, chunks, strict=True):
        expected = send_chunk(app_client, s, c, offset=0)
        assert result["outputs"] == expected["outputs"] and result["steps"] == 2
