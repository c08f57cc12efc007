"""The Python client against a real `lstm-serve`, directly and through a faulty proxy."""

import asyncio

import httpx
import numpy as np
import pytest
from lstm_stream_client import (
    AsyncClient,
    Client,
    InvalidInput,
    ModelNotFound,
    OffsetConflict,
    RetriesExhausted,
    RetryPolicy,
    SessionNotFound,
)

from service.store.embedded import free_port
from tests.client.conftest import CLIENT_DIR
from tests.client.reference import SENSOR, sensor_inputs, server_steps, stateless
from tests.faults import FaultyProxy
from tests.processes import ServiceProcess


def server_offers_binary(url: str) -> bool:
    document = httpx.get(f"{url}/openapi.json").json()
    content = document["paths"]["/v1/sessions/{session_id}/predict"]["post"]["requestBody"]
    return "application/octet-stream" in content["content"]


# Generous for a proxy that cuts ~30% of the exchanges; quick, so tests stay short.
PATIENT = RetryPolicy(attempts=40, base_seconds=0.005, cap_seconds=0.1, budget_seconds=120)


def test_10000_steps_through_dropped_connections_are_applied_exactly_once(
    served: ServiceProcess,
) -> None:
    # The contract: whatever the transport loses (requests before the server sees them,
    # answers after it applied the chunk), the session ends at exactly 10,000 steps with
    # outputs bit-identical to one stateless call on the whole sequence.
    inputs = sensor_inputs(10_000, seed=12)
    expected = stateless(served.url, SENSOR, inputs)
    with (
        FaultyProxy(served.port, drop_before=0.1, drop_after=0.1, seed=1) as proxy,
        Client(proxy.url, retry=PATIENT) as client,  # binary bodies if the server has them
    ):
        session = client.create_session(SENSOR)
        outputs = np.concatenate(list(session.stream(inputs, chunk_steps=100)))
        assert client.config.binary == server_offers_binary(served.url)
    assert proxy.counts.dropped_before > 0 and proxy.counts.dropped_after > 0
    assert np.array_equal(outputs, expected)
    assert session.steps == 10_000
    assert server_steps(served.url, session.id) == 10_000


def test_a_chunk_another_writer_got_in_first_raises_offset_conflict_with_the_server_steps(
    served: ServiceProcess,
) -> None:
    inputs = sensor_inputs(8, seed=3)
    with Client(served.url) as client:
        session = client.create_session(SENSOR)
        session.predict(inputs[:2])
        other = httpx.post(
            f"{served.url}/v1/sessions/{session.id}/predict",
            json={"inputs": inputs[2:5].tolist(), "offset": 2},
        )
        assert other.status_code == 200
        with pytest.raises(OffsetConflict) as conflict:
            session.predict(inputs[2:4])
    assert conflict.value.steps == 5 and conflict.value.offset == 2
    assert session.steps == 2  # the client did not move: nothing skipped, nothing repeated
    assert server_steps(served.url, session.id) == 5


def test_resuming_a_known_session_continues_at_its_steps(served: ServiceProcess) -> None:
    inputs = sensor_inputs(30, seed=4)
    with Client(served.url) as client:
        first = client.create_session(SENSOR, session_id="resume-me")
        head = first.predict(inputs[:12])
        resumed = client.session("resume-me")
        assert resumed.steps == 12
        tail = resumed.predict(inputs[12:])
        resumed.reset()
        assert server_steps(served.url, "resume-me") == 0
        resumed.delete()
        with pytest.raises(SessionNotFound):
            client.session("resume-me")
    assert np.array_equal(np.concatenate([head, tail]), stateless(served.url, SENSOR, inputs))


def test_server_errors_are_typed(served: ServiceProcess) -> None:
    with Client(served.url) as client:
        with pytest.raises(ModelNotFound):
            client.create_session("no-such-model")
        session = client.create_session(SENSOR)
        with pytest.raises(InvalidInput) as invalid:
            session.predict(np.zeros((3, 5), dtype=np.float32))
        assert invalid.value.status == 422
        assert session.steps == 0 and server_steps(served.url, session.id) == 0


def test_an_unreachable_server_exhausts_the_retry_budget() -> None:
    policy = RetryPolicy(attempts=3, base_seconds=0.001, cap_seconds=0.01)
    with (
        Client(f"http://127.0.0.1:{free_port()}", retry=policy) as client,
        pytest.raises(RetriesExhausted) as exhausted,
    ):
        client.predict(SENSOR, np.zeros((1, 16)))
    assert exhausted.value.attempts == 3


def test_async_client_streams_64_sessions_at_once_through_faults(served: ServiceProcess) -> None:
    # 64 sessions, each its own sequence, all in flight together over one AsyncClient
    # whose connections the proxy keeps cutting: each ends bit-identical to its reference.
    sessions, steps, chunk = 64, 60, 20
    sequences = [sensor_inputs(steps, seed=100 + index) for index in range(8)]
    references = [stateless(served.url, SENSOR, sequence) for sequence in sequences]
    inputs = [sequences[index % 8] for index in range(sessions)]
    expected = [references[index % 8] for index in range(sessions)]

    async def stream_all(url: str) -> list[tuple[str, int, np.ndarray]]:
        async with AsyncClient(url, retry=PATIENT, binary=False) as client:

            async def one(sequence: np.ndarray) -> tuple[str, int, np.ndarray]:
                session = await client.create_session(SENSOR)
                outputs = [y async for y in session.stream(sequence, chunk_steps=chunk)]
                return session.id, session.steps, np.concatenate(outputs)

            return await asyncio.gather(*(one(sequence) for sequence in inputs))

    with FaultyProxy(served.port, drop_before=0.05, drop_after=0.05, seed=2) as proxy:
        results = asyncio.run(stream_all(proxy.url))
    assert proxy.counts.dropped_after > 0
    for (session_id, client_steps, outputs), reference in zip(results, expected, strict=True):
        assert client_steps == steps and server_steps(served.url, session_id) == steps
        assert np.array_equal(outputs, reference)


def test_the_readme_client_example_runs_as_written(served: ServiceProcess) -> None:
    readme = (CLIENT_DIR.parent / "README.md").read_text()
    section = readme[readme.index("## Clients") :]
    start = section.index("```python\n") + len("```python\n")
    example = section[start : section.index("```\n", start)]
    scope: dict[str, object] = {}
    exec(example.replace("http://127.0.0.1:8000", served.url), scope)
    # The example asserts its own claims (steps, bits); it ends by deleting its session.
    assert httpx.get(f"{served.url}/v1/sessions/{scope['session'].id}").status_code == 404  # type: ignore[attr-defined]
