"""Micro-batching gives every chunk exactly what running it alone gives."""

import asyncio

import numpy as np
import pytest

from service.core.batcher import MicroBatcher
from service.core.models import load_model
from tests.models import DEMO_DIR


@pytest.fixture(scope="module")
def runner():
    return load_model(DEMO_DIR / "sensor-lstm.keras").runner


def chunks_and_states(runner, count: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(count, steps, runner.input_features)).astype(np.float32)
    states = rng.normal(scale=0.5, size=(count, runner.state_size)).astype(np.float32)
    return list(xs), list(states)


async def gathered(batcher: MicroBatcher, runner, xs, states):
    return await asyncio.gather(
        *(batcher.step(runner, x, s) for x, s in zip(xs, states, strict=True))
    )


@pytest.mark.parametrize("steps", [1, 3, 32])
def test_chunks_waiting_together_run_as_one_batch_bit_for_bit(runner, steps):
    xs, states = chunks_and_states(runner, 37, steps, seed=steps)
    batcher = MicroBatcher(max_batch=64)

    results = asyncio.run(gathered(batcher, runner, xs, states))

    assert (batcher.batches, batcher.chunks) == (1, 37)
    for x, state, (outputs, new_state) in zip(xs, states, results, strict=True):
        alone_outputs, alone_state = runner.step(x, state)
        assert np.array_equal(outputs, alone_outputs)
        assert np.array_equal(new_state, alone_state)


def test_batches_hold_at_most_max_batch_chunks(runner):
    xs, states = chunks_and_states(runner, 10, 1, seed=1)
    batcher = MicroBatcher(max_batch=4)

    results = asyncio.run(gathered(batcher, runner, xs, states))

    assert (batcher.batches, batcher.chunks) == (3, 10)
    for x, state, (outputs, new_state) in zip(xs, states, results, strict=True):
        assert np.array_equal(outputs, runner.step(x, state)[0])
        assert np.array_equal(new_state, runner.step(x, state)[1])


def test_chunks_of_different_lengths_run_in_separate_batches(runner):
    xs1, states1 = chunks_and_states(runner, 3, 1, seed=2)
    xs2, states2 = chunks_and_states(runner, 3, 2, seed=3)
    batcher = MicroBatcher()

    results = asyncio.run(gathered(batcher, runner, xs1 + xs2, states1 + states2))

    assert (batcher.batches, batcher.chunks) == (2, 6)
    for x, state, (outputs, _) in zip(xs1 + xs2, states1 + states2, results, strict=True):
        assert outputs.shape == (x.shape[0], runner.output_features)
        assert np.array_equal(outputs, runner.step(x, state)[0])


def test_a_waiting_chunk_is_joined_by_later_ones_within_max_wait(runner):
    xs, states = chunks_and_states(runner, 4, 1, seed=4)
    batcher = MicroBatcher(max_wait_seconds=0.2)

    async def staggered():
        first = asyncio.ensure_future(batcher.step(runner, xs[0], states[0]))
        await asyncio.sleep(0)  # the first chunk is waiting before the others arrive
        rest = [batcher.step(runner, x, s) for x, s in zip(xs[1:], states[1:], strict=True)]
        return await asyncio.gather(first, *rest)

    results = asyncio.run(staggered())

    assert (batcher.batches, batcher.chunks) == (1, 4)
    for x, state, (outputs, _) in zip(xs, states, results, strict=True):
        assert np.array_equal(outputs, runner.step(x, state)[0])


def test_a_runner_error_reaches_every_chunk_of_the_batch(runner):
    good, states = chunks_and_states(runner, 2, 1, seed=5)
    wrong_width = np.zeros((1, runner.input_features + 1), dtype=np.float32)
    batcher = MicroBatcher()

    async def mixed():
        return await asyncio.gather(
            batcher.step(runner, good[0], states[0]),
            batcher.step(runner, wrong_width, states[1]),
            return_exceptions=True,
        )

    async def mixed_then_alone():
        return await mixed(), await batcher.step(runner, good[1], states[1])

    results, (after, _) = asyncio.run(mixed_then_alone())

    # One failure, shared: the good chunk is not answered as if it had run.
    assert isinstance(results[0], ValueError) and results[1] is results[0]
    # And the batcher is not wedged by it: the next chunk runs as it would alone.
    assert np.array_equal(after, runner.step(good[1], states[1])[0])


def test_a_chunk_arriving_alone_after_a_batch_of_one_runs_alone_but_probes(runner):
    xs, states = chunks_and_states(runner, 3, 1, seed=7)
    batcher = MicroBatcher()
    assert batcher.worth_waiting(runner, xs[0])  # nothing known yet: it waits

    asyncio.run(gathered(batcher, runner, xs[:1], states[:1]))  # a batch of one
    waits = [batcher.worth_waiting(runner, xs[0]) for _ in range(16)]
    assert waits == ([False] * 7 + [True]) * 2  # alone, but every 8th still opens a batch

    asyncio.run(gathered(batcher, runner, xs[:2], states[:2]))  # company again
    assert batcher.worth_waiting(runner, xs[0])
    two_steps = np.concatenate([xs[0], xs[1]])  # another length: nothing known, it waits
    assert batcher.worth_waiting(runner, two_steps)


def test_with_a_wait_set_every_chunk_waits_for_company(runner):
    xs, states = chunks_and_states(runner, 1, 1, seed=8)
    batcher = MicroBatcher(max_wait_seconds=0.001)
    asyncio.run(gathered(batcher, runner, xs, states))
    assert all(batcher.worth_waiting(runner, xs[0]) for _ in range(16))
