"""`Session.websocket()` against a real `lstm-serve`, through a proxy that cuts connections."""

import asyncio
from pathlib import Path

import numpy as np
import pytest
from lstm_stream_client import AsyncClient, Client, OffsetConflict, RetryPolicy

from service.store.embedded import EmbeddedRedis
from tests.client.reference import SENSOR, sensor_inputs, server_steps, stateless
from tests.faults import FaultyProxy
from tests.models import DEMO_DIR
from tests.processes import ServiceProcess

PATIENT = RetryPolicy(attempts=40, base_seconds=0.005, cap_seconds=0.1, budget_seconds=120)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_10000_steps_over_a_websocket_that_keeps_dying_are_applied_exactly_once(
    served: ServiceProcess, binary: bool
) -> None:
    # Each cut socket is remade at the unanswered chunk's offset: a chunk the server had
    # applied is answered again from storage, never applied twice.
    inputs = sensor_inputs(10_000, seed=31)
    expected = stateless(served.url, SENSOR, inputs)
    with Client(served.url) as direct:
        session_id = direct.create_session(SENSOR).id
    with (
        FaultyProxy(served.port, drop_before=0.05, drop_after=0.05, seed=4) as proxy,
        Client(proxy.url, retry=PATIENT) as client,
    ):
        session = client.session(session_id)
        with session.websocket(binary=binary) as stream:
            outputs = np.concatenate(list(stream.stream(inputs, chunk_steps=100)))
    assert proxy.counts.dropped_before > 0 and proxy.counts.dropped_after > 0
    assert np.array_equal(outputs, expected)
    assert session.steps == 10_000 and server_steps(served.url, session_id) == 10_000


def test_a_websocket_chunk_at_a_stale_offset_raises_offset_conflict(served: ServiceProcess) -> None:
    inputs = sensor_inputs(6, seed=32)
    with Client(served.url) as client:
        session = client.create_session(SENSOR)
        session.predict(inputs[:4])
        session.steps = 1  # as if this client had missed chunks another writer sent
        with session.websocket() as stream, pytest.raises(OffsetConflict) as conflict:
            stream.predict(inputs[1:3])
    assert conflict.value.steps == 4
    assert server_steps(served.url, session.id) == 4


def test_async_websockets_stream_many_sessions_at_once_through_faults(
    served: ServiceProcess,
) -> None:
    sessions, steps = 16, 200
    sequences = [sensor_inputs(steps, seed=200 + index) for index in range(4)]
    references = [stateless(served.url, SENSOR, sequence) for sequence in sequences]

    async def stream_all(url: str) -> list[tuple[str, int, np.ndarray]]:
        async with AsyncClient(url, retry=PATIENT) as client:

            async def one(sequence: np.ndarray) -> tuple[str, int, np.ndarray]:
                session = await client.create_session(SENSOR)
                async with session.websocket() as stream:
                    outputs = [y async for y in stream.stream(sequence, chunk_steps=10)]
                return session.id, session.steps, np.concatenate(outputs)

            return await asyncio.gather(*(one(sequences[i % 4]) for i in range(sessions)))

    with FaultyProxy(served.port, drop_before=0.03, drop_after=0.03, seed=5) as proxy:
        results = asyncio.run(stream_all(proxy.url))
    assert proxy.counts.dropped_after > 0
    for index, (session_id, client_steps, outputs) in enumerate(results):
        assert client_steps == steps and server_steps(served.url, session_id) == steps
        assert np.array_equal(outputs, references[index % 4])


def test_a_websocket_whose_replica_dies_continues_on_another_by_offset(
    served: ServiceProcess, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    # The state is in Redis before each answer: when the replica holding the socket is
    # killed, the client reconnects (through a balancer that skips dead replicas) to the
    # other one and goes on at its offset, bit-exact.
    inputs = sensor_inputs(2000, seed=33)
    expected = stateless(served.url, SENSOR, inputs)
    doomed = ServiceProcess(redis_server.url, DEMO_DIR, log_path=tmp_path / "doomed.log").start()
    try:
        with (
            FaultyProxy([doomed.port, served.port], drop_before=0, drop_after=0) as balancer,
            Client(balancer.url, retry=PATIENT) as client,
        ):
            session = client.create_session(SENSOR)
            outputs = []
            with session.websocket() as stream:
                for index, y in enumerate(stream.stream(inputs, chunk_steps=20)):
                    outputs.append(y)
                    if index == 40:
                        doomed.kill()
    finally:
        doomed.kill()
    assert balancer.counts.failovers > 0
    assert np.array_equal(np.concatenate(outputs), expected)
    assert session.steps == 2000 and server_steps(served.url, session.id) == 2000
