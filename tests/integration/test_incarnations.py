"""A chunk in flight never lands in another incarnation of its session id.

Process A (an `lstm-serve`) runs a long chunk; meanwhile process B (this test's app, on the
same Redis) deletes the session and creates a new one under the same id, or resets it.
The compare-and-set token names the incarnation, not only the revision: a re-created
session starts at revision 0 again, as the old one did, and used to take the old chunk.
"""

import threading
import time
import uuid

import httpx
import numpy as np
import pytest

from tests.processes import ServiceProcess

MODEL, OTHER_MODEL = "sensor-lstm", "seed-lstm"
LONG = np.random.default_rng(15).normal(size=(10_000, 16)).astype(np.float32)
ROUNDS = 3


@pytest.fixture(scope="module")
def process_a(redis_server, model_dir):
    with ServiceProcess(redis_server.url, model_dir) as process:
        yield process


def time_to_read(url: str, session_id: str) -> float:
    """How long A takes to parse the long chunk and read the session: a stale offset is
    refused right after the read, before any step is computed."""
    body = {"inputs": LONG.tolist(), "offset": 10**9}
    with httpx.Client(timeout=600) as http:
        began = time.monotonic()
        answer = http.post(f"{url}/v1/sessions/{session_id}/predict", json=body)
        assert answer.status_code == 409, answer.text[:300]
        return time.monotonic() - began


def chunk_in_flight(url: str, session_id: str, offset: int) -> tuple[threading.Thread, list]:
    answers: list[httpx.Response] = []
    body = {"inputs": LONG.tolist(), "offset": offset}
    # Twice the time to read: A has read the session, and is computing 10,000 steps.
    head_start = 2 * time_to_read(url, session_id)

    def post() -> None:
        with httpx.Client(timeout=600) as http:
            answers.append(http.post(f"{url}/v1/sessions/{session_id}/predict", json=body))

    thread = threading.Thread(target=post)
    thread.start()
    time.sleep(head_start)
    return thread, answers


WARM = 5  # steps each incarnation takes before the race: both at the same revision


def warm(client, session_id: str, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(WARM, 16)).astype(np.float32)
    body = {"inputs": x.tolist(), "offset": 0}
    answer = client.post(f"/v1/sessions/{session_id}/predict", json=body)
    assert answer.status_code == 200, answer.text[:300]
    return x


@pytest.mark.parametrize("new_model", [OTHER_MODEL, MODEL], ids=["other model", "same model"])
def test_a_chunk_never_lands_in_a_re_created_session(client, process_a, new_model):
    for round_ in range(ROUNDS):
        session_id = f"reborn-{uuid.uuid4().hex[:8]}"
        assert client.post(f"/v1/models/{MODEL}/sessions", json={"session_id": session_id})
        warm(client, session_id, seed=2 * round_)
        thread, answers = chunk_in_flight(process_a.url, session_id, offset=WARM)
        assert client.delete(f"/v1/sessions/{session_id}").status_code == 204
        created = client.post(
            f"/v1/models/{new_model}/sessions", json={"session_id": session_id}
        ).json()
        # The new incarnation as far as the old one was (same steps, same revision) when
        # it has the same model: only the incarnation in the token tells them apart.
        new_inputs = warm(client, session_id, seed=2 * round_ + 1) if new_model == MODEL else None
        thread.join()
        answer = answers[0]
        now = client.get(f"/v1/sessions/{session_id}").json()
        if new_inputs is not None and answer.status_code == 200 and now["steps"] > WARM:
            # A read the session only after the re-creation (a loaded machine): the chunk
            # then belongs to the new incarnation, and continues from its state, never
            # from the old one's.
            whole = np.concatenate([new_inputs, LONG])
            expected = client.post(f"/v1/models/{MODEL}/predict", json={"inputs": whole.tolist()})
            outputs = np.array(answer.json()["outputs"], dtype=np.float32)
            assert (
                outputs.tobytes()
                == np.array(expected.json()["outputs"], np.float32)[WARM:].tobytes()
            )
            assert now["steps"] == WARM + len(LONG)
            continue
        # The chunk was sent to the first incarnation: applied there before the delete
        # (200), or refused (404; 409 or 422 if it reached the new one before its own
        # chunks); never written into the second.
        assert answer.status_code in (200, 404, 409, 422), answer.text[:300]
        assert (now["model"], now["steps"], now["created_at"]) == (
            new_model,
            WARM if new_inputs is not None else 0,
            created["created_at"],
        )


def test_a_reset_during_a_chunk_leaves_step_zero_or_refuses_the_chunk(client, process_a):
    for _ in range(ROUNDS):
        session_id = f"reset-{uuid.uuid4().hex[:8]}"
        client.post(f"/v1/models/{MODEL}/sessions", json={"session_id": session_id})
        first = client.post(
            f"/v1/sessions/{session_id}/predict", json={"inputs": LONG[:5].tolist(), "offset": 0}
        )
        assert first.status_code == 200
        thread, answers = chunk_in_flight(process_a.url, session_id, offset=5)
        assert client.post(f"/v1/sessions/{session_id}/reset").status_code == 200
        thread.join()
        # Applied before the reset (then wiped), or refused after it: offset 5 is stale.
        assert answers[0].status_code in (200, 409), answers[0].text[:300]
        assert client.get(f"/v1/sessions/{session_id}").json()["steps"] == 0
