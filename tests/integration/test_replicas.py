"""Three `lstm-serve` processes over one Redis: any replica serves any chunk, bit for bit."""

import asyncio
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.fleet import freeze_then_kill, sigkill, start_all, stream_with_failover, worker_pids
from tests.processes import ServiceProcess
from tests.racing import (
    append_concurrently,
    async_client,
    in_acknowledged_order,
    random_chunks,
    replay_through_fresh_session,
)
from tests.streaming import new_session, predict, random_chunking

FEATURES = {"sensor-lstm": 16, "gru-lstm-dense": 5, "lstm-last-step": 4}


@pytest.fixture(scope="module")
def replicas(redis_server, model_dir) -> Iterator[list[ServiceProcess]]:
    processes = start_all([ServiceProcess(redis_server.url, model_dir) for _ in range(3)])
    yield processes
    for process in processes:
        process.stop()


def expected_chunks(url: str, model: str, inputs: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """The contract: slices of one stateless call (or, for a last-step model, one call per
    prefix), from a single process."""
    with httpx.Client(base_url=url, timeout=60) as client:
        ends = np.cumsum(sizes)
        if not client.get(f"/v1/models/{model}").json()["per_step"]:
            return [predict(client, model, inputs[:end]) for end in ends]
        return np.split(predict(client, model, inputs), ends[:-1])


def sessions_on(url: str, model: str, count: int) -> list[str]:
    with httpx.Client(base_url=url, timeout=60) as client:
        return [new_session(client, model) for _ in range(count)]


def assert_bit_identical(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for index, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.shape == b.shape and np.array_equal(a, b), f"chunk {index} differs"


@pytest.mark.parametrize("model", sorted(FEATURES))
@pytest.mark.parametrize("order", ["round-robin", "random"])
def test_switching_replica_every_chunk_is_bit_identical(replicas, model, order):
    urls = [replica.url for replica in replicas]
    rng = np.random.default_rng([len(model), len(order)])
    inputs = rng.normal(size=(150, FEATURES[model])).astype(np.float32)
    sizes = random_chunking(len(inputs), rng, largest=12)
    want = expected_chunks(urls[0], model, inputs, sizes)
    assert_bit_identical(expected_chunks(urls[2], model, inputs, sizes), want)
    picks = rng.integers(0, len(urls), size=len(sizes))

    def pick(index: int, attempt: int) -> str:
        return urls[index % len(urls)] if order == "round-robin" else urls[picks[index]]

    async def run() -> list[list[np.ndarray]]:
        sessions = sessions_on(urls[1], model, 3)
        async with async_client() as client:
            logs = await asyncio.gather(
                *(stream_with_failover(client, pick, sid, inputs, sizes) for sid in sessions)
            )
        return [log.outputs for log in logs]

    for outputs in asyncio.run(run()):
        assert_bit_identical(outputs, want)


def test_concurrent_appends_over_three_replicas_are_each_applied_once(replicas):
    urls = [replica.url for replica in replicas]
    rng = np.random.default_rng(33)
    plans = [random_chunks(rng, 4, 16) for _ in range(32)]
    (session_id,) = sessions_on(urls[0], "sensor-lstm", 1)

    acks = asyncio.run(append_concurrently(urls, session_id, plans))

    total = sum(len(chunk) for plan in plans for chunk in plan)
    assert httpx.get(f"{urls[1]}/v1/sessions/{session_id}").json()["steps"] == total
    ordered = in_acknowledged_order(acks)
    with httpx.Client(base_url=urls[2], timeout=60) as client:
        full = predict(client, "sensor-lstm", np.concatenate([ack.inputs for ack in ordered]))
    for ack in ordered:
        assert np.array_equal(np.array(ack.outputs, np.float32), full[ack.offset : ack.steps])
    for ack, answer in replay_through_fresh_session(urls[0], "sensor-lstm", ordered):
        assert answer == ack.outputs


def test_sigkill_one_replica_mid_stream_and_continue_on_the_others(replicas):
    """Last in this module: it leaves the first replica dead."""
    urls = [replica.url for replica in replicas]
    rng = np.random.default_rng(99)
    inputs = rng.normal(size=(240, 16)).astype(np.float32)
    sizes = random_chunking(len(inputs), rng, largest=16)
    want = expected_chunks(urls[1], "sensor-lstm", inputs, sizes)
    sessions = sessions_on(urls[0], "sensor-lstm", 8)
    alive = [0, 1, 2]
    acked = 0

    def pick(index: int, attempt: int) -> str:
        return urls[alive[(index + attempt) % len(alive)]]

    def kill() -> None:
        replicas[0].kill()
        alive.remove(0)

    def kill_halfway() -> None:
        nonlocal acked
        acked += 1
        if acked == len(sessions) * len(sizes) // 2:
            freeze_then_kill(replicas[0].process.pid, 0.3, kill)

    async def run() -> list:
        async with async_client() as client:
            return await asyncio.gather(
                *(
                    stream_with_failover(client, pick, sid, inputs, sizes, kill_halfway)
                    for sid in sessions
                )
            )

    logs = asyncio.run(run())

    assert not replicas[0].process.running
    for log in logs:
        assert_bit_identical(log.outputs, want)
    assert sum(log.transport_errors for log in logs) > 0  # some chunks were cut off mid-flight
    print(
        f"SIGKILL mid-stream: {sum(log.transport_errors for log in logs)} requests cut off and "
        f"resent, {sum(log.replayed for log in logs)} of them answered as replays"
    )


def test_workers_share_sessions_and_survive_a_killed_worker(redis_server, model_dir):
    rng = np.random.default_rng(2)
    inputs = rng.normal(size=(160, 16)).astype(np.float32)
    sizes = random_chunking(len(inputs), rng, largest=10)
    server = ServiceProcess(redis_server.url, model_dir, workers=2).start()
    try:
        workers = worker_pids(server)
        assert len(workers) == 2
        want = expected_chunks(server.url, "sensor-lstm", inputs, sizes)
        sessions = sessions_on(server.url, "sensor-lstm", 4)
        acked = 0

        def kill_a_worker_halfway() -> None:
            nonlocal acked
            acked += 1
            if acked == len(sessions) * len(sizes) // 2:
                freeze_then_kill(workers[0], 0.3, lambda: sigkill(workers[0]))

        async def run() -> list:
            # Pooled connections are spread by the kernel over both workers, so chunks of one
            # session land on either, and those on the frozen worker's connections are cut off.
            async with async_client() as client:
                return await asyncio.gather(
                    *(
                        stream_with_failover(
                            client,
                            lambda i, a: server.url,
                            sid,
                            inputs,
                            sizes,
                            kill_a_worker_halfway,
                        )
                        for sid in sessions
                    )
                )

        logs = asyncio.run(run())
    finally:
        server.kill()  # not a graceful stop: uvicorn may be starting a replacement worker

    for log in logs:
        assert_bit_identical(log.outputs, want)
    print(
        f"worker SIGKILL mid-stream: {sum(log.transport_errors for log in logs)} requests cut "
        f"off and resent, {sum(log.replayed for log in logs)} of them answered as replays"
    )
