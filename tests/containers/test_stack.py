"""The compose stack that scripts/test-containers runs (the image built from
docker/Dockerfile, docker-compose.yml, docker/nginx.conf), checked as a user would: through
the load balancer's published port, with podman for what a user does to containers. The
tests run in file order: a replica crashes, then Redis."""

import json
import os
import signal
import subprocess
import time
from typing import Any

import httpx
import numpy as np
import pytest

from tests.models import DEMO_DIR
from tests.streaming import new_session, predict, random_chunking

STACK_URL = os.environ.get("LSTM_STACK_URL", "")
PROJECT = os.environ.get("LSTM_STACK_PROJECT", "")
IMAGE = os.environ.get("LSTM_STACK_IMAGE", "")
SERVICES = ["redis", "api1", "api2", "api3", "lb"]
REPLICAS = ["api1", "api2", "api3"]
MODEL = "sensor-lstm"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not STACK_URL, reason="needs the compose stack that scripts/test-containers starts"
    ),
]


def podman(*args: str) -> str:
    done = subprocess.run(
        ["podman", *args], check=True, capture_output=True, text=True, timeout=120
    )
    return done.stdout


def container(service: str) -> str:
    (identifier,) = podman(
        "ps", "-aq",
        "--filter", f"label=io.podman.compose.project={PROJECT}",
        "--filter", f"label=com.docker.compose.service={service}",
    ).split()  # fmt: skip
    return identifier


def inspect(service: str, template: str) -> str:
    return podman("inspect", "-f", template, container(service)).strip()


def wait_until_healthy(service: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = inspect(service, "{{.State.Status}} {{.State.Health.Status}}")
        if state == "running healthy":
            return
        time.sleep(1)
    raise AssertionError(f"{service} is {state!r} after {timeout} s")


def crash(service: str) -> None:
    """SIGKILL to the container's init from the host, as the OOM killer would do: unlike
    `podman kill` (a user's stop), the restart policy applies."""
    os.kill(int(inspect(service, "{{.State.Pid}}")), signal.SIGKILL)


def restart(service: str, started: str, timeout: float = 60) -> None:
    """Started again after a kill: by its restart policy, or by hand as a user would."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, now = inspect(service, "{{.State.Status}} {{.State.StartedAt}}").split(" ", 1)
        if status == "running" and now != started:
            return
        if status == "exited":
            subprocess.run(["podman", "start", container(service)], capture_output=True)
        time.sleep(1)
    raise AssertionError(f"{service} did not start again in {timeout} s")


def replica_addresses() -> dict[str, str]:
    """nginx logs the replica that answered as ip:port."""
    template = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    return {f"{inspect(name, template)}:8000": name for name in REPLICAS}


def access_log() -> list[dict[str, Any]]:
    lines = podman("logs", container("lb")).splitlines()
    return [json.loads(line) for line in lines if line.startswith('{"time"')]


def served_by(tags: set[str]) -> dict[str, str]:
    """request id -> the replica that answered it (the last one nginx tried), for the
    requests of these chunks that succeeded."""
    names = replica_addresses()
    return {
        entry["request_id"]: names.get(entry["upstream"].split(", ")[-1], entry["upstream"])
        for entry in access_log()
        if entry["request_id"].rpartition("-")[0] in tags and entry["status"] == 200
    }


def send(client: httpx.Client, session_id: str, chunk: np.ndarray, offset: int, tag: str) -> Any:
    """A chunk with its offset, resent as docs/deployment.md tells clients to: on 502 (a
    replica failed with the chunk, which nginx does not resend) and 503 (Redis
    restarting). The offset makes a resend safe: answered from the replay if applied."""
    for attempt in range(60):
        response = client.post(
            f"/v1/sessions/{session_id}/predict",
            json={"inputs": chunk.tolist(), "offset": offset},
            headers={"X-Request-ID": f"{tag}-{attempt}"},
        )
        if response.status_code not in (502, 503):
            break
        time.sleep(1)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["offset"], body["steps"]) == (offset, offset + len(chunk))
    return np.array(body["outputs"], dtype=np.float32)


@pytest.fixture
def client() -> Any:
    with httpx.Client(base_url=STACK_URL, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def sequence() -> np.ndarray:
    return np.random.default_rng(14).normal(size=(240, 16)).astype(np.float32)


def test_every_container_is_healthy_and_the_stack_ready_through_nginx(client):
    for service in SERVICES:
        assert inspect(service, "{{.State.Health.Status}}") == "healthy", service
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready" and body["checks"]["redis"] == "ok", body
    assert {m["name"] for m in client.get("/v1/models").json()["models"]} == {
        path.stem for path in DEMO_DIR.glob("*.keras")
    }


def test_the_image_runs_as_a_non_root_user():
    assert podman("image", "inspect", "-f", "{{.Config.User}}", IMAGE).strip() == "10001:10001"
    for service in REPLICAS:
        rows = podman("top", container(service), "huser", "args").splitlines()[1:]
        users = {row.split()[0] for row in rows}
        assert users == {"10001"}, f"{service}: {rows}"
        assert any("lstm-serve" in row for row in rows), rows


def test_the_image_keeps_its_liveness_check_for_docker_run():
    check = podman("image", "inspect", "-f", "{{json .Config.Healthcheck}}", IMAGE)
    assert "http://127.0.0.1:8000/healthz" in json.loads(check)["Test"][-1]


def test_stateless_predict_through_the_stack_matches_keras(client, sequence):
    import keras  # the reference, loaded outside the containers from the same file

    model = keras.saving.load_model(DEMO_DIR / f"{MODEL}.keras", safe_mode=True)
    expected = model.predict(sequence[None], verbose=0)[0]
    np.testing.assert_allclose(predict(client, MODEL, sequence), expected, atol=1e-5, rtol=0)


def test_streams_in_random_chunkings_are_bit_identical_to_a_stateless_predict(client, sequence):
    full = predict(client, MODEL, sequence)
    rng = np.random.default_rng(2026)
    tags = set()
    for run in range(3):
        session_id = new_session(client, MODEL)
        outputs, start = [], 0
        for i, size in enumerate(random_chunking(len(sequence), rng, largest=24)):
            tag = f"chunking-{run}-{i}"
            outputs.append(send(client, session_id, sequence[start : start + size], start, tag))
            tags.add(tag)
            start += size
        assert np.array_equal(np.concatenate(outputs), full), f"chunking {run}"
    # Round-robin: every replica served chunks of these sessions.
    assert set(served_by(tags).values()) == set(REPLICAS)


def test_a_replica_killed_mid_stream_leaves_the_stream_to_the_others(client, sequence):
    full = predict(client, MODEL, sequence)
    sizes = random_chunking(len(sequence), np.random.default_rng(7), largest=16)
    half = len(sizes) // 2
    session_id = new_session(client, MODEL)
    addresses = replica_addresses()
    outputs, start, after_kill = [], 0, set()
    for i, size in enumerate(sizes):
        if i == half:
            crash("api2")
        tag = f"kill-{i}"
        outputs.append(send(client, session_id, sequence[start : start + size], start, tag))
        if i >= half:
            after_kill.add(tag)
        start += size
    assert np.array_equal(np.concatenate(outputs), full)
    assert set(served_by(after_kill).values()) <= {"api1", "api3"}
    # restart: unless-stopped brings it back, ready again, at the address nginx resolved
    # at its start, so nginx sends it requests again.
    wait_until_healthy("api2")
    assert replica_addresses() == addresses
    # nginx skips a replica for fail_timeout (10 s) after its last failed attempt.
    tags: set[str] = set()
    deadline = time.monotonic() + 30
    while "api2" not in served_by(tags).values():
        assert time.monotonic() < deadline, f"nginx never sent api2 a request: {served_by(tags)}"
        tag = f"back-{len(tags)}"
        assert client.get("/v1/models", headers={"X-Request-ID": f"{tag}-0"}).status_code == 200
        tags.add(tag)
        time.sleep(0.5)


def test_sessions_continue_after_a_redis_restart_from_its_aof_volume(client, sequence):
    full = predict(client, MODEL, sequence)
    half = len(sequence) // 2
    session_id = new_session(client, MODEL)
    first = send(client, session_id, sequence[:half], 0, "before-redis-restart")
    time.sleep(2)  # appendfsync everysec: the last write reaches the file within a second
    mounts = inspect("redis", "{{range .Mounts}}{{.Name}}:{{.Destination}} {{end}}").split()
    assert f"{PROJECT}_redis-data:/data" in mounts
    started = inspect("redis", "{{.State.StartedAt}}")
    crash("redis")  # SIGKILL: only what is on disk survives
    restart("redis", started)
    wait_until_healthy("redis", timeout=60)

    assert client.get(f"/v1/sessions/{session_id}").json()["steps"] == half
    second = send(client, session_id, sequence[half:], half, "after-redis-restart")
    assert np.array_equal(np.concatenate([first, second]), full)
