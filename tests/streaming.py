"""Client-side helpers for streaming tests: chunkings and API calls."""

from typing import Any

import numpy as np
from fastapi.testclient import TestClient


def random_chunking(total: int, rng: np.random.Generator, largest: int = 40) -> list[int]:
    sizes = []
    while total > 0:
        size = int(min(total, rng.integers(1, largest + 1)))
        sizes.append(size)
        total -= size
    return sizes


def predict(client: Any, model: str, inputs: np.ndarray) -> np.ndarray:
    response = client.post(f"/v1/models/{model}/predict", json={"inputs": inputs.tolist()})
    assert response.status_code == 200, response.text
    return np.array(response.json()["outputs"], dtype=np.float32)


def new_session(client: TestClient | Any, model: str, **body: Any) -> str:
    response = client.post(f"/v1/models/{model}/sessions", json=body or None)
    assert response.status_code == 201, response.text
    session_id: str = response.json()["session_id"]
    return session_id


def post_chunk(
    client: Any,
    session_id: str,
    chunk: np.ndarray,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Any:
    """The one way tests post a chunk (JSON); `extra` adds body fields such as `offset`."""
    return client.post(
        f"/v1/sessions/{session_id}/predict",
        json={"inputs": chunk.tolist(), **extra},
        headers=headers,
    )


def send_chunk(client: Any, session_id: str, chunk: np.ndarray, **extra: Any) -> dict[str, Any]:
    """`post_chunk`, answered 200; the response body."""
    response = post_chunk(client, session_id, chunk, **extra)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def stream(client: Any, session_id: str, inputs: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    outputs, start = [], 0
    for size in sizes:
        body = send_chunk(client, session_id, inputs[start : start + size], offset=start)
        assert body["offset"] == start and body["steps"] == start + size
        assert body["replayed"] is False
        outputs.append(np.array(body["outputs"], dtype=np.float32))
        start += size
    return outputs
