"""Heavy work: bounded per key and in total, and the same bits when computed in slices."""

import asyncio
import contextlib
import os
import threading
import time

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


def test_a_sliced_job_returns_its_value_and_lets_work_that_arrives_pass_between_slices():
    # `call_sliced` runs a job's slices back to back in one hand-off, yet a call queued
    # meanwhile goes between two of them, not after the last.
    work = HeavyWork(per_key=2, total=2)
    order: list[str] = []
    began = threading.Event()

    def job():
        for step in range(200):
            order.append(f"slice {step}")
            began.set()
            time.sleep(0.001)  # a slice's work, the interpreter lock let go
            yield
        return "decoded"

    async def scenario() -> str:
        long = asyncio.ensure_future(work.call_sliced(job()))
        await asyncio.get_running_loop().run_in_executor(None, began.wait)
        await work.call(order.append, "other")
        return await long

    try:
        value = asyncio.run(scenario())
    finally:
        work.close()
    assert value == "decoded"
    assert 0 < order.index("other") < len(order) - 1
    assert [item for item in order if item != "other"] == [f"slice {n}" for n in range(200)]


@pytest.mark.parametrize(("requests", "hand_offs"), [(1, 1), (2, 6)])
def test_a_sliced_job_keeps_the_thread_only_while_its_request_is_alone(requests, hand_offs):
    # Its slices hold the interpreter lock: with another request in progress each of its six
    # (five yields, then the return) goes back to the event loop, which holds the lock
    # freely until it queues the next.
    work = HeavyWork(per_key=2, total=2)
    entries = 0
    steps = work._steps

    def counted(job):
        nonlocal entries
        entries += 1
        steps(job)

    work._steps = counted  # type: ignore[method-assign]

    def job():
        for _ in range(5):
            yield
        return "encoded"

    async def scenario() -> str:
        with contextlib.ExitStack() as in_progress:
            for _ in range(requests):
                in_progress.enter_context(work.request())
            return await work.call_sliced(job())

    try:
        assert asyncio.run(scenario()) == "encoded"
    finally:
        work.close()
    assert entries == hand_offs


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="no per-thread niceness here")
@pytest.mark.parametrize("nice", [0, 7, 40])
def test_the_heavy_work_thread_runs_less_favoured_than_the_event_loop(nice):
    # The kernel's scheduler reads niceness per thread: the heavy-work thread's, and only
    # its, is raised by `nice` (capped at 19, the least favoured).
    here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    work = HeavyWork(per_key=1, total=1, nice=nice)

    def thread_priority() -> tuple[int, int]:
        thread = threading.get_native_id()
        return thread, os.getpriority(os.PRIO_PROCESS, thread)

    try:
        thread, priority = asyncio.run(work.call(thread_priority))
    finally:
        work.close()
    assert thread != threading.get_native_id()
    assert priority == min(19, here + nice)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == here


def test_a_sink_gets_each_slice_of_one_row_on_the_event_loop_in_order(runner):
    # What lets an answer be encoded while the thread computes the next slice: the slices'
    # outputs, in order, on the loop's thread, adding up to the whole computation's.
    x = np.random.default_rng(4).normal(size=(1, 175, runner.input_features))
    x = x.astype(np.float32)
    states = np.zeros((1, runner.state_size), np.float32)
    work = HeavyWork(per_key=1, total=1, slice_steps=50)

    class Sink:
        def __init__(self):
            self.restarts, self.pieces, self.threads = 0, [], set()

        def restart(self):
            self.restarts += 1

        def add(self, outputs):
            self.pieces.append(outputs)
            self.threads.add(threading.get_ident())

    sink = Sink()
    try:
        outputs, _ = asyncio.run(work.run("k", runner, x, states, sink))
    finally:
        work.close()
    assert sink.restarts == 1
    assert [len(piece) for piece in sink.pieces] == [50, 50, 50, 25]
    assert sink.threads == {threading.get_ident()}
    assert np.concatenate(sink.pieces).tobytes() == runner.step_batch(x, states)[0][0].tobytes()
    assert outputs[0].tobytes() == np.concatenate(sink.pieces).tobytes()
