"""New model versions without a restart, on a live two-worker service: sessions on version 1
stream on bit for bit while version 2 arrives, a broken file is refused beside them, and
removing version 1 turns its sessions into `model_version_mismatch` until a reset."""

import shutil
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest

from tests.processes import ServiceProcess
from tests.streaming import new_session, send_chunk
from tests.unit.test_repository import put, put_broken

MODEL = "live-m"
KEY, ADMIN = "user-key-19ab", "admin-key-7f3c"
AUTH, ADMIN_AUTH = {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def live(redis_server, tmp_path_factory) -> Iterator[tuple[httpx.Client, object]]:
    repo = tmp_path_factory.mktemp("repo")
    put(repo, MODEL, 1, seed=1)
    env = {
        "LSTM_MODEL_POLL_SECONDS": "0.5",
        "LSTM_API_KEYS": KEY,
        "LSTM_ADMIN_API_KEYS": ADMIN,
        "LSTM_ACCESS_LOG": "false",
    }
    with ServiceProcess(redis_server.url, repo, workers=2, env=env) as service:  # noqa: SIM117
        with httpx.Client(base_url=service.url, headers=AUTH, timeout=30) as client:
            yield client, repo


def converged(client: httpx.Client, check: Callable[[dict], bool], timeout: float = 90) -> dict:
    """Wait until 12 answers in a row (new connections, so either worker) pass `check`."""
    deadline, streak = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        info = httpx.get(f"{client.base_url}/v1/models/{MODEL}", headers=AUTH).json()
        streak = streak + 1 if check(info) else 0
        if streak >= 12:
            return info
        time.sleep(0.1)
    raise AssertionError(f"workers did not converge: {info}")


def numbers(info: dict) -> list[int]:
    return [v["version_number"] for v in info.get("versions", [])]


def outputs_of(body: dict) -> np.ndarray:
    return np.array(body["outputs"], dtype=np.float32)


def test_versions_arrive_and_leave_under_live_sessions(live):
    client, repo = live
    inputs = np.random.default_rng(0).normal(size=(12, 2)).astype(np.float32)
    v1 = client.get(f"/v1/models/{MODEL}").json()["version"]
    full = outputs_of(
        client.post(f"/v1/models/{MODEL}/predict", json={"inputs": inputs.tolist()}).json()
    )
    on_v1 = new_session(client, MODEL)
    streamed = [outputs_of(send_chunk(client, on_v1, inputs[:4], offset=0))]

    # Version 2 arrives: the reload answers with both, polling brings the other worker along.
    put(repo, MODEL, 2, seed=2)
    reloaded = client.post(f"/v1/models/{MODEL}/reload", headers=ADMIN_AUTH)
    assert reloaded.status_code == 200 and numbers(reloaded.json()) == [1, 2]
    info = converged(client, lambda i: numbers(i) == [1, 2])
    v2 = info["version"]
    assert v2 != v1 and info["version_number"] == 2
    streamed.append(outputs_of(send_chunk(client, on_v1, inputs[4:8], offset=4)))
    pinned_full = client.post(
        f"/v1/models/{MODEL}/predict?version=1", json={"inputs": inputs.tolist()}
    )
    assert np.array_equal(outputs_of(pinned_full.json()), full)
    assert client.post(f"/v1/models/{MODEL}/sessions").json()["model_version"] == v2
    pinned = client.post(f"/v1/models/{MODEL}/sessions", json={"version": 1}).json()
    assert pinned["model_version"] == v1

    # A broken file is refused and listed; the served versions stay.
    put_broken(repo, MODEL, 3)
    info = converged(client, lambda i: [r["version_number"] for r in i["refused_versions"]] == [3])
    assert numbers(info) == [1, 2] and "cannot load" in info["refused_versions"][0]["reason"]
    streamed.append(outputs_of(send_chunk(client, on_v1, inputs[8:], offset=8)))
    # Through every reload, version 1's session matched one full call on version 1 bit for bit.
    assert np.array_equal(np.concatenate(streamed), full)

    # Version 1 removed: its sessions are refused until a reset moves them to the latest.
    shutil.rmtree(repo / MODEL / "1")
    converged(client, lambda i: numbers(i) == [2])
    refused = client.post(f"/v1/sessions/{on_v1}/predict", json={"inputs": inputs[:1].tolist()})
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "model_version_mismatch"
    assert (error["session_version"], error["served_version"]) == (v1, v2)
    reset = client.post(f"/v1/sessions/{on_v1}/reset").json()
    assert (reset["steps"], reset["model_version"]) == (0, v2)
    assert send_chunk(client, on_v1, inputs[:3], offset=0)["steps"] == 3


def test_reload_is_for_admin_keys_only(live):
    client, _ = live
    path = f"/v1/models/{MODEL}/reload"
    assert client.post(path).json()["error"]["code"] == "forbidden"  # a user key
    anonymous = httpx.post(f"{client.base_url}{path}")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    # The admin key is for reloads, not for sessions.
    other = httpx.get(f"{client.base_url}/v1/models/{MODEL}", headers=ADMIN_AUTH)
    assert other.status_code == 401
