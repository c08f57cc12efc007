"""Sessions streamed at the same time, with micro-batching on and off, each get exactly
the outputs of one stateless predict of their whole sequence."""

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest

from service.main import create_app
from tests.streaming import random_chunking

MODELS = {"sensor-lstm": 16, "gru-lstm-dense": 5}
SESSIONS_PER_MODEL = 5
STEPS = 48


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    answer: dict[str, Any] = response.json()
    return answer


async def stream_one(
    client: httpx.AsyncClient, model: str, inputs: np.ndarray, sizes: list[int]
) -> np.ndarray:
    session = await post(client, f"/v1/models/{model}/sessions", {})
    outputs, start = [], 0
    for size in sizes:
        body = await post(
            client,
            f"/v1/sessions/{session['session_id']}/predict",
            {"inputs": inputs[start : start + size].tolist(), "offset": start},
        )
        assert body["offset"] == start and not body["replayed"]
        outputs.append(np.array(body["outputs"], dtype=np.float32))
        start += size
    return np.concatenate(outputs)


async def stream_all(app: Any, streams: list[tuple[str, np.ndarray, list[int]]]) -> list[Any]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            streamed = await asyncio.gather(
                *(stream_one(client, model, x, sizes) for model, x, sizes in streams)
            )
            full = [
                np.array(
                    (await post(client, f"/v1/models/{model}/predict", {"inputs": x.tolist()}))[
                        "outputs"
                    ],
                    dtype=np.float32,
                )
                for model, x, _ in streams
            ]
            batcher = app.state.sessions.batcher
            counts = (batcher.batches, batcher.chunks) if batcher else None
    return [streamed, full, counts]


@pytest.mark.parametrize("micro_batch", [True, False])
def test_concurrent_sessions_match_the_stateless_predict_bit_for_bit(settings, client, micro_batch):
    rng = np.random.default_rng(31)
    streams = []
    for model, features in MODELS.items():
        for _ in range(SESSIONS_PER_MODEL):
            x = rng.normal(size=(STEPS, features)).astype(np.float32)
            # Mostly 1-step chunks, so that sessions line up and share batches.
            sizes = [1] * 24 + random_chunking(STEPS - 24, rng, largest=4)
            streams.append((model, x, sizes))
    app = create_app(
        settings.model_copy(update={"micro_batch": micro_batch, "micro_batch_wait_ms": 20.0}),
        registry=client.app.state.sessions.models,
    )

    streamed, full, counts = asyncio.run(stream_all(app, streams))

    for outputs, expected in zip(streamed, full, strict=True):
        assert outputs.shape == expected.shape
        assert np.array_equal(outputs, expected)
    if micro_batch:
        batches, chunks = counts
        assert chunks >= len(streams) * 24
        assert batches < chunks, "no two chunks ever shared a batch"
    else:
        assert counts is None
