"""Each process keeps the last record it saw per session and skips the read before a chunk;
the compare-and-set against that whole record keeps answers exact when another replica
wrote in between. Two `SessionService`s on one Redis stand for two replicas behind a
round-robin balancer, the worst case for the cache. The reference is the stateless predict."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from service.core.sessions import SessionLimits, SessionService
from service.errors import OffsetConflict, SessionNotFound
from service.store.redis_store import RedisStateStore
from tests.streaming import predict

MODEL = "sensor-lstm"
LIMITS = SessionLimits(recent_records=100)


def two_replicas(
    client: Any,
    redis_url: str,
    scenario: Callable[..., Awaitable[Any]],
    clocks: tuple[Callable[[], int], ...] = (),
) -> Any:
    models = client.app.state.sessions.models

    async def run() -> Any:
        store = RedisStateStore.from_url(redis_url, 2.0)
        try:
            a = SessionService(store, models, LIMITS, *clocks[:1])
            b = SessionService(store, models, LIMITS, *clocks[1:])
            return await scenario(a, b)
        finally:
            await store.close()

    return asyncio.run(run())


@pytest.fixture
def inputs() -> np.ndarray:
    return np.random.default_rng(21).normal(size=(12, 16)).astype(np.float32)


@pytest.mark.parametrize("with_offsets", [False, True], ids=["appended", "offsets"])
def test_alternating_replicas_stay_exact(client, redis_server, inputs, with_offsets):
    full = predict(client, MODEL, inputs)

    async def scenario(a: SessionService, b: SessionService) -> list[Any]:
        session_id, _ = await a.create("_", MODEL)
        results = []
        for index, start in enumerate(range(0, 12, 2)):
            replica = (a, b)[index % 2]  # each write makes the other's record stale
            offset = start if with_offsets else None
            results.append(
                await replica.predict("_", session_id, inputs[start : start + 2], offset)
            )
        return results

    results = two_replicas(client, redis_server.url, scenario)

    assert [r.offset for r in results] == list(range(0, 12, 2))
    assert results[-1].record.steps == 12
    outputs = np.concatenate([r.outputs for r in results])
    assert np.array_equal(outputs, full)


def test_a_session_deleted_and_created_again_elsewhere_is_not_written_from_the_cache(
    client, redis_server, inputs
):
    """A holds the old incarnation; B deletes the id, starts it again and writes it up to
    the same revision. A's next chunk continues B's incarnation, not its own, and A's retry
    of its old chunk is refused."""
    fresh = predict(client, MODEL, inputs[4:8])

    async def scenario(a: SessionService, b: SessionService) -> tuple[Any, ...]:
        session_id, _ = await a.create("_", MODEL, session_id="reborn")
        first = await a.predict("_", session_id, inputs[:2], offset=0)
        await b.delete("_", session_id)
        await b.create("_", MODEL, session_id=session_id)
        await b.predict("_", session_id, inputs[4:6], offset=0)  # same revision as A's
        following = await a.predict("_", session_id, inputs[6:8])
        with pytest.raises(OffsetConflict) as refused:
            await a.predict("_", session_id, inputs[:2], offset=0)
        return first, refused.value, following

    first, refused, following = two_replicas(client, redis_server.url, scenario)

    assert first.record.steps == 2
    assert refused.details["steps"] == 4
    assert following.offset == 2
    assert np.array_equal(following.outputs, fresh[2:])


def test_a_retry_is_replayed_only_when_the_store_agrees(client, redis_server, inputs):
    """A applied a chunk, B applied the next one: A's retry of its own chunk is no longer
    the last chunk, so it is refused, whatever A remembers."""

    async def scenario(a: SessionService, b: SessionService) -> tuple[Any, Any]:
        session_id, _ = await a.create("_", MODEL)
        mine = await a.predict("_", session_id, inputs[:3], offset=0)
        again = await a.predict("_", session_id, inputs[:3], offset=0)
        await b.predict("_", session_id, inputs[3:5], offset=3)
        with pytest.raises(OffsetConflict) as refused:
            await a.predict("_", session_id, inputs[:3], offset=0)
        return (mine, again), refused.value

    (mine, again), refused = two_replicas(client, redis_server.url, scenario)

    assert again.replayed and np.array_equal(again.outputs, mine.outputs)
    assert refused.details["steps"] == 5


@pytest.mark.parametrize("created_again", ["before", "after"])
def test_a_chunk_never_lands_in_a_session_created_again_after_it_began(
    client, redis_server, inputs, created_again
):
    """A keeps the old incarnation's record; B deletes the id and starts it again. A's
    chunk starts from its kept record and its compare-and-set fails: the session it then
    reads is this chunk's only if it was created before the chunk began (a stale kept
    record); created after, the chunk was for the one that is gone. The replicas' clocks
    say when each thing happened."""
    fresh = predict(client, MODEL, inputs[:2])
    a_clock, b_clock = [1_000_000], [0]

    async def scenario(a: SessionService, b: SessionService) -> tuple[Any, Any]:
        session_id, _ = await a.create("_", MODEL, session_id=f"reborn-{created_again}")
        await b.delete("_", session_id)
        b_clock[0] = a_clock[0] + (1 if created_again == "after" else -1)
        await b.create("_", MODEL, session_id=session_id)
        try:
            outcome: Any = await a.predict("_", session_id, inputs[:2], offset=0)
        except SessionNotFound as refused:
            outcome = refused
        return outcome, await b.get("_", session_id)

    outcome, stored = two_replicas(
        client, redis_server.url, scenario, (lambda: a_clock[0], lambda: b_clock[0])
    )

    if created_again == "after":
        assert isinstance(outcome, SessionNotFound)
        assert stored.steps == 0
    else:
        assert stored.steps == 2 and outcome.record.incarnation == stored.incarnation
        assert np.array_equal(outcome.outputs, fresh)
