"""Many clients writing to one session at once, over real HTTP (httpx.AsyncClient)."""

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

TIMEOUT = httpx.Timeout(60.0)


def async_client() -> httpx.AsyncClient:
    """One client for many concurrent requests (one connection each): building an httpx
    client costs milliseconds of CPU, which would pace the clients instead of the server."""
    return httpx.AsyncClient(timeout=TIMEOUT, limits=httpx.Limits(max_connections=None))


@dataclass(frozen=True)
class Ack:
    """A chunk the server acknowledged: where it put it and what it answered."""

    inputs: np.ndarray
    offset: int
    steps: int
    replayed: bool
    outputs: Any


async def post_chunk(
    client: httpx.AsyncClient,
    base_url: str,
    session_id: str,
    chunk: np.ndarray,
    offset: int | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"inputs": chunk.tolist()}
    if offset is not None:
        body["offset"] = offset
    return await client.post(f"{base_url}/v1/sessions/{session_id}/predict", json=body)


def ack_of(chunk: np.ndarray, response: httpx.Response) -> Ack:
    assert response.status_code == 200, response.text
    body = response.json()
    return Ack(chunk, body["offset"], body["steps"], body["replayed"], body["outputs"])


def random_chunks(rng: np.random.Generator, count: int, features: int) -> list[np.ndarray]:
    return [
        rng.normal(size=(int(rng.integers(1, 6)), features)).astype(np.float32)
        for _ in range(count)
    ]


async def append_concurrently(
    base_urls: list[str], session_id: str, plans: list[list[np.ndarray]]
) -> list[Ack]:
    """One client per plan (spread over `base_urls`), each sending its chunks without
    offsets one after another; all clients at once. Returns every acknowledgement."""

    async def one_client(
        client: httpx.AsyncClient, index: int, plan: list[np.ndarray]
    ) -> list[Ack]:
        base_url = base_urls[index % len(base_urls)]
        return [ack_of(c, await post_chunk(client, base_url, session_id, c)) for c in plan]

    async with async_client() as client:
        results = await asyncio.gather(
            *(one_client(client, i, plan) for i, plan in enumerate(plans))
        )
    return [ack for acks in results for ack in acks]


async def race_for_offset(
    base_urls: list[str], session_id: str, chunks: list[np.ndarray], offset: int
) -> list[httpx.Response]:
    """Every chunk sent at once, each by its own client, all claiming the same offset."""

    async with async_client() as client:
        return list(
            await asyncio.gather(
                *(
                    post_chunk(client, base_urls[i % len(base_urls)], session_id, c, offset)
                    for i, c in enumerate(chunks)
                )
            )
        )


def in_acknowledged_order(acks: list[Ack]) -> list[Ack]:
    """The acknowledgements sorted by offset, checked to tile [0, total) with no gap or overlap."""
    ordered = sorted(acks, key=lambda ack: ack.offset)
    position = 0
    for ack in ordered:
        assert ack.offset == position, f"chunk at {ack.offset}, expected {position}"
        assert ack.steps == position + len(ack.inputs)
        assert ack.replayed is False
        position = ack.steps
    return ordered


def replay_through_fresh_session(
    base_url: str, model: str, ordered: list[Ack]
) -> list[tuple[Ack, Any]]:
    """Each acknowledged chunk sent again, in offset order, to a new session: the answers."""
    with httpx.Client(base_url=base_url, timeout=TIMEOUT) as client:
        created = client.post(f"/v1/models/{model}/sessions")
        assert created.status_code == 201, created.text
        session_id = created.json()["session_id"]
        answers = []
        for ack in ordered:
            body = {"inputs": ack.inputs.tolist(), "offset": ack.offset}
            response = client.post(f"/v1/sessions/{session_id}/predict", json=body)
            assert response.status_code == 200, response.text
            answers.append((ack, response.json()["outputs"]))
        return answers
