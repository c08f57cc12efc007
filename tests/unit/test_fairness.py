"""Heavy work: bounded per key and in total, and the same bits when computed in slices."""

import asyncio

import numpy as np
import pytest

from service.core.fairness import HeavyWork
from service.core.repository import ModelRegistry
from service.errors import RateLimited


@pytest.fixture(scope="module")
def runner(client):
    registry: ModelRegistry = client.app.state.sessions.models
    return registry.get("sensor-lstm").runner


@pytest.mark.parametrize(("batch", "slice_steps"), [(1, 7), (3, 5), (4, 2)])
def test_slices_give_the_bits_of_one_call(runner, batch, slice_steps):
    rng = np.random.default_rng(batch)
    x = rng.normal(size=(batch, 45, runner.input_features)).astype(np.float32)
    states = rng.normal(size=(batch, runner.state_size)).astype(np.float32)
    whole_outputs, whole_states = runner.step_batch(x, states)
    work = HeavyWork(per_key=1, total=1, slice_steps=slice_steps)
    try:
        outputs, new_states = asyncio.run(work.run("k", runner, x, states))
    finally:
        work.close()
    assert outputs.tobytes() == whole_outputs.tobytes()
    assert new_states.tobytes() == whole_states.tobytes()


def test_work_past_the_key_or_total_bound_is_refused_at_once(runner):
    x = np.zeros((1, 2000, runner.input_features), np.float32)
    states = np.zeros((1, runner.state_size), np.float32)
    work = HeavyWork(per_key=2, total=3, slice_steps=50)

    async def scenario() -> tuple[RateLimited, RateLimited, list[object]]:
        running = [asyncio.ensure_future(work.run(k, runner, x, states)) for k in "aab"]
        await asyncio.sleep(0)  # all three admitted, now computing
        with pytest.raises(RateLimited) as key_bound:
            await work.run("a", runner, x[:, :40], states)  # a's third
        with pytest.raises(RateLimited) as total_bound:
            await work.run("c", runner, x[:, :40], states)  # c's first, the total's fourth
        return key_bound.value, total_bound.value, await asyncio.gather(*running)

    try:
        key_bound, total_bound, finished = asyncio.run(scenario())
    finally:
        work.close()
    assert len(finished) == 3
    assert isinstance(key_bound, RateLimited) and key_bound.details["limit"] == 2
    assert isinstance(total_bound, RateLimited) and total_bound.details["limit"] == 3
    assert key_bound.headers == {"Retry-After": "1"} and key_bound.status == 429


def test_long_work_lets_work_that_arrives_pass_after_a_slice(runner):
    # The bound the slices exist for: a job that keeps the thread while nobody waits still
    # hands it over at its next slice when another one arrives.
    long = np.zeros((1, 100_000, runner.input_features), np.float32)
    short = np.random.default_rng(3).normal(size=(1, 40, runner.input_features))
    short = short.astype(np.float32)
    states = np.zeros((1, runner.state_size), np.float32)
    work = HeavyWork(per_key=2, total=2, slice_steps=50)

    async def scenario() -> tuple[bool, np.ndarray]:
        flood = asyncio.ensure_future(work.run("a", runner, long, states))
        await asyncio.sleep(0.01)  # the flood is computing in the thread
        outputs, _ = await work.run("b", runner, short, states)
        overtaken = not flood.done()
        flood.cancel()  # its thread stops at the next slice
        with pytest.raises(asyncio.CancelledError):
            await flood
        return overtaken, outputs

    try:
        overtaken, outputs = asyncio.run(scenario())
    finally:
        work.close()
    assert overtaken
    assert outputs.tobytes() == runner.step_batch(short, states)[0].tobytes()
