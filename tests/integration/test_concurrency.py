"""Concurrent writers on one session, against a real `lstm-serve` process: exactly once."""

import asyncio
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from service.core.sessions import SessionLimits, SessionService
from service.store.redis_store import RedisStateStore
from tests.processes import ServiceProcess
from tests.racing import (
    append_concurrently,
    in_acknowledged_order,
    race_for_offset,
    random_chunks,
    replay_through_fresh_session,
)
from tests.streaming import new_session, predict

MODEL, FEATURES = "sensor-lstm", 16
CLIENTS, CHUNKS_PER_CLIENT = 32, 6
RACERS = 16


@pytest.fixture(scope="module")
def service(redis_server, model_dir) -> Iterator[ServiceProcess]:
    with ServiceProcess(redis_server.url, model_dir) as process:
        yield process


@pytest.fixture(scope="module")
def http(service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=60) as client:
        yield client


def test_concurrent_appends_are_each_applied_exactly_once(service, http):
    rng = np.random.default_rng(32)
    plans = [random_chunks(rng, CHUNKS_PER_CLIENT, FEATURES) for _ in range(CLIENTS)]
    total = sum(len(chunk) for plan in plans for chunk in plan)
    session_id = new_session(http, MODEL)

    started = time.monotonic()
    acks = asyncio.run(append_concurrently([service.url], session_id, plans))
    elapsed = time.monotonic() - started

    assert len(acks) == CLIENTS * CHUNKS_PER_CLIENT
    assert http.get(f"/v1/sessions/{session_id}").json()["steps"] == total
    ordered = in_acknowledged_order(acks)
    for index in range(CLIENTS):
        # One client sends its chunks one after another, so they land in that order.
        own = [
            ack.offset for ack in acks[index * CHUNKS_PER_CLIENT : (index + 1) * CHUNKS_PER_CLIENT]
        ]
        assert own == sorted(own)

    full = predict(http, MODEL, np.concatenate([ack.inputs for ack in ordered]))
    for ack in ordered:
        assert np.array_equal(np.array(ack.outputs, np.float32), full[ack.offset : ack.steps])
    for ack, answer in replay_through_fresh_session(service.url, MODEL, ordered):
        assert answer == ack.outputs
    print(f"{len(acks)} chunks ({total} steps) from {CLIENTS} clients in {elapsed:.2f}s")


@pytest.mark.parametrize("identical", [False, True], ids=["distinct", "identical"])
def test_racing_requests_for_one_offset_apply_exactly_one(service, http, identical):
    rng = np.random.default_rng(7 + identical)
    session_id = new_session(http, MODEL)
    winners: list[np.ndarray] = []
    for _ in range(4):
        offset = sum(len(chunk) for chunk in winners)
        chunks = random_chunks(rng, 1 if identical else RACERS, FEATURES)
        if identical:
            chunks *= RACERS

        responses = asyncio.run(race_for_offset([service.url], session_id, chunks, offset))

        ok = [(c, r.json()) for c, r in zip(chunks, responses, strict=True) if r.status_code == 200]
        applied = [(chunk, body) for chunk, body in ok if not body["replayed"]]
        assert len(applied) == 1
        winner, first = applied[0]
        assert (first["offset"], first["steps"]) == (offset, offset + len(winner))
        if identical:
            assert len(ok) == RACERS
            assert all(body["outputs"] == first["outputs"] for _, body in ok)
        else:
            assert len(ok) == 1
            for response in responses:
                if response.status_code != 200:
                    assert response.status_code == 409, response.text
                    error = response.json()["error"]
                    assert error["code"] == "offset_conflict"
                    assert error["steps"] == offset + len(winner)
        winners.append(winner)

    full = predict(http, MODEL, np.concatenate(winners))
    last_offset = len(full) - len(winners[-1])
    retries = asyncio.run(
        race_for_offset([service.url], session_id, [winners[-1]] * 4, last_offset)
    )
    for response in retries:
        assert response.status_code == 200 and response.json()["replayed"] is True
        assert np.array_equal(np.array(response.json()["outputs"], np.float32), full[last_offset:])


def test_compare_and_set_alone_holds_32_racing_writers(client, redis_server):
    """32 session services (as if 32 processes: no shared turns) on one session: every
    write goes through the CAS retry loop, and none gives up with `session_busy`."""
    models = client.app.state.sessions.models
    rng = np.random.default_rng(64)
    plans = [random_chunks(rng, 4, FEATURES) for _ in range(CLIENTS)]

    async def race() -> tuple[list[tuple[np.ndarray, int, list]], int]:
        store = RedisStateStore.from_url(redis_server.url, 2.0)
        services = [SessionService(store, models, SessionLimits()) for _ in plans]
        session_id, _ = await services[0].create("_", MODEL)

        async def writer(service: SessionService, plan: list[np.ndarray]) -> list:
            acks = []
            for chunk in plan:
                result = await service.predict("_", session_id, chunk)
                acks.append((chunk, result.offset, result.outputs.tolist()))
            return acks

        try:
            results = await asyncio.gather(*map(writer, services, plans))
            steps = (await services[0].get("_", session_id)).steps
        finally:
            await store.close()
        return [ack for acks in results for ack in acks], steps

    acks, steps = asyncio.run(race())

    assert steps == sum(len(chunk) for plan in plans for chunk in plan)
    acks.sort(key=lambda ack: ack[1])
    assert [offset for _, offset, _ in acks] == list(
        np.cumsum([0] + [len(chunk) for chunk, _, _ in acks[:-1]])
    )
    full = predict(client, MODEL, np.concatenate([chunk for chunk, _, _ in acks]))
    for chunk, offset, outputs in acks:
        assert np.array_equal(np.array(outputs, np.float32), full[offset : offset + len(chunk)])
