"""Large bodies are admitted before they are read (bytes and heavy work per key and in
total), and a large JSON body is decoded off the event loop."""

import asyncio
import json
import threading
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from service.api import tensor_json
from tests.apps import app_with

KEY, OTHER = "admission-key-a", "admission-key-b"
LARGE = 100_000  # bytes: over the 64 KiB from which a body is large


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def padded_chunk(size: int) -> bytes:
    """A one-step seed-lstm chunk, padded with whitespace to `size` bytes."""
    body = b'{"inputs": [[0.5, 0.5]]}'
    return body + b" " * (size - len(body))


async def held(body: bytes, asked: asyncio.Event, go: asyncio.Event) -> AsyncIterator[bytes]:
    """The body's first kilobyte, then the rest once `go` is set; `asked` is set when the
    server has taken the first part and asks for more."""
    yield body[:1000]
    asked.set()
    await go.wait()
    yield body[1000:]


async def streamed(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 10_000):
        yield body[start : start + 10_000]


@pytest.fixture(scope="module")
def admitting(client, settings):
    with app_with(
        client,
        settings,
        api_keys=f"{KEY},{OTHER}",
        max_body_bytes=200_000,
        max_body_bytes_per_key=240_000,
        max_body_bytes_total=350_000,
        max_heavy_per_key=2,
    ) as test_client:
        yield test_client


def new_session(test_client, key: str) -> str:
    created = test_client.post("/v1/models/seed-lstm/sessions", headers=bearer(key))
    return str(created.json()["session_id"])


def run(test_client, scenario):
    """`scenario(http)` on the app's own event loop, with an async client of the app."""

    async def main():
        transport = httpx.ASGITransport(app=test_client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            return await scenario(http)

    return test_client.portal.call(main)


def chunk_request(http, session_id: str, key: str, content, size: int | None = None):
    headers = {**bearer(key), "content-type": "application/json"}
    if size is not None:
        headers["content-length"] = str(size)
    return http.post(f"/v1/sessions/{session_id}/predict", content=content, headers=headers)


def test_large_bodies_past_the_key_or_total_bytes_are_429_before_being_read(admitting):
    a, a2, b = (new_session(admitting, key) for key in (KEY, KEY, OTHER))

    async def scenario(http):
        asked, go = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(
            chunk_request(http, a, KEY, held(padded_chunk(150_000), asked, go), 150_000)
        )
        await asked.wait()  # 150,000 bytes of KEY's taken
        declared = await chunk_request(http, a2, KEY, padded_chunk(LARGE), LARGE)
        chunked = await chunk_request(http, a2, KEY, streamed(padded_chunk(LARGE)))
        other_asked, other_go = asyncio.Event(), asyncio.Event()
        other = asyncio.create_task(
            chunk_request(
                http, b, OTHER, held(padded_chunk(150_000), other_asked, other_go), 150_000
            )
        )
        await other_asked.wait()  # 300,000 bytes taken in all
        past_total = await chunk_request(http, b, OTHER, padded_chunk(70_000), 70_000)
        small = await chunk_request(http, a2, KEY, b'{"inputs": [[0.5, 0.5]]}')
        go.set()
        other_go.set()
        return declared, chunked, past_total, small, await first, await other

    declared, chunked, past_total, small, first, other = run(admitting, scenario)
    for refused in (declared, chunked, past_total):
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
    assert "this API key" in declared.json()["error"]["message"]
    assert "the server" in past_total.json()["error"]["message"]
    assert small.status_code == 200  # small bodies are never held back by large ones
    assert first.status_code == 200 and other.status_code == 200
    # The refused chunks changed nothing: a2 has only the small chunk, b only its own.
    for sid, key, expected in ((a, KEY, 1), (a2, KEY, 1), (b, OTHER, 1)):
        steps = admitting.get(f"/v1/sessions/{sid}", headers=bearer(key)).json()["steps"]
        assert steps == expected, sid
    # Answered, the bodies' bytes are given back: the same large body is admitted now.
    again = run(admitting, lambda http: chunk_request(http, a2, KEY, padded_chunk(LARGE), LARGE))
    assert again.status_code == 200


def test_a_large_body_is_heavy_work_from_its_first_byte(client, settings):
    with app_with(client, settings, api_keys=f"{KEY},{OTHER}", max_heavy_per_key=1) as app:
        a, a2, b = (new_session(app, key) for key in (KEY, KEY, OTHER))

        async def scenario(http):
            asked, go = asyncio.Event(), asyncio.Event()
            first = asyncio.create_task(
                chunk_request(http, a, KEY, held(padded_chunk(LARGE), asked, go), LARGE)
            )
            await asked.wait()  # one step in it, but large: KEY's one heavy request
            second = await chunk_request(http, a2, KEY, padded_chunk(LARGE), LARGE)
            small = await chunk_request(http, a2, KEY, b'{"inputs": [[0.5, 0.5]]}')
            other = await chunk_request(http, b, OTHER, padded_chunk(LARGE), LARGE)
            go.set()
            return second, small, other, await first

        second, small, other, first = run(app, scenario)
        assert second.status_code == 429 and second.json()["error"]["code"] == "rate_limited"
        assert "timesteps in progress" in second.json()["error"]["message"]
        assert [small.status_code, other.status_code, first.status_code] == [200, 200, 200]
        assert app.get(f"/v1/sessions/{a2}", headers=bearer(KEY)).json()["steps"] == 1


def test_a_short_chunk_of_another_key_is_answered_while_a_large_json_body_is_decoded(
    admitting, monkeypatch
):
    # Small slices: the 500-step body below is decoded in hundreds of them.
    monkeypatch.setattr(tensor_json, "SLICE_BYTES", 2048)
    events: list[str] = []
    answered = threading.Event()
    real_piece = tensor_json._piece

    def recorded_piece(*args):
        piece = real_piece(*args)
        events.append("_piece")
        if events.count("_piece") == 1:
            # The decoding goes on in the heavy-work thread, beside the event loop: the
            # short chunk must get through now (it never would if the loop decoded).
            answered.wait(60)
        return piece

    monkeypatch.setattr(tensor_json, "_piece", recorded_piece)
    inputs = np.random.default_rng(7).normal(size=(500, 16)).astype(np.float32)
    body = json.dumps({"inputs": inputs.tolist()}).encode()
    assert LARGE < len(body) < 200_000
    session_id = new_session(admitting, OTHER)

    async def scenario(http):
        headers = {**bearer(KEY), "content-type": "application/json"}
        large = asyncio.create_task(
            http.post("/v1/models/sensor-lstm/predict", content=body, headers=headers)
        )
        while "_piece" not in events and not large.done():
            await asyncio.sleep(0)
        events.append("decoding")
        short = await chunk_request(http, session_id, OTHER, b'{"inputs": [[0.5, 0.5]]}')
        events.append("short chunk answered")
        answered.set()
        return short, await large

    short, large = run(admitting, scenario)
    assert short.status_code == 200 and large.status_code == 200
    answered = events.index("short chunk answered")
    assert events.index("decoding") < answered < len(events) - 1 - events[::-1].index("_piece")
    # And the slices decoded what one call on the same values as binary gives, bit for bit.
    binary = admitting.post(
        "/v1/models/sensor-lstm/predict",
        content=inputs.tobytes(),
        headers={
            **bearer(KEY),
            "content-type": "application/octet-stream",
            "accept": "application/octet-stream",
        },
    )
    expected = np.frombuffer(binary.content, "<f4").reshape(500, -1)
    assert np.array(large.json()["outputs"], np.float32).tobytes() == expected.tobytes()


def test_long_json_answers_encoded_in_slices_hold_the_binary_answers_values(admitting, monkeypatch):
    from service.api.routes import v2

    for module in (tensor_json, v2):
        monkeypatch.setattr(module, "SLICE_VALUES", 100)  # 300 steps x 8 outputs: 24 slices
    inputs = np.random.default_rng(3).normal(size=(300, 16)).astype(np.float32)
    key = bearer(KEY)
    binary = {
        **key,
        "content-type": "application/octet-stream",
        "accept": "application/octet-stream",
    }
    expected = np.frombuffer(
        admitting.post(
            "/v1/models/sensor-lstm/predict", content=inputs.tobytes(), headers=binary
        ).content,
        "<f4",
    ).reshape(300, 8)
    predicted = admitting.post(
        "/v1/models/sensor-lstm/predict", json={"inputs": inputs.tolist()}, headers=key
    )
    created = admitting.post("/v1/models/sensor-lstm/sessions", headers=key).json()["session_id"]
    chunk = admitting.post(
        f"/v1/sessions/{created}/predict", json={"inputs": inputs.tolist()}, headers=key
    )
    tensor = {
        "name": "inputs",
        "datatype": "FP32",
        "shape": [1, 300, 16],
        "data": inputs.ravel().tolist(),
    }
    answer = admitting.post("/v2/models/sensor-lstm/infer", json={"inputs": [tensor]}, headers=key)
    assert np.array(predicted.json()["outputs"], np.float32).tobytes() == expected.tobytes()
    assert np.array(chunk.json()["outputs"], np.float32).tobytes() == expected.tobytes()
    data = answer.json()["outputs"][0]["data"]
    assert np.array(data, np.float32).reshape(300, 8).tobytes() == expected.tobytes()
