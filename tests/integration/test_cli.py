"""`lstm-serve` with no Redis configured starts its own, and keeps sessions across restarts;
it refuses a gRPC port another process listens on."""

import os
import socket
import subprocess
import sys

import httpx
import numpy as np

from service.store.embedded import free_port
from tests.models import DEMO_DIR
from tests.processes import ServiceProcess
from tests.streaming import post_chunk


def test_embedded_redis_is_started_logged_and_survives_a_restart(tmp_path):
    log_path = tmp_path / "serve.log"
    env = {"LSTM_DATA_DIR": str(tmp_path / "redis-data")}
    inputs = np.array([[0, 0], [0, 1], [0, 0], [1, 1]], dtype=np.float32)

    with (
        ServiceProcess(None, DEMO_DIR, env=env, log_path=log_path) as service,
        httpx.Client(base_url=service.url, timeout=10) as client,
    ):
        full = client.post("/v1/models/seed-lstm/predict", json={"inputs": inputs.tolist()})
        created = client.post("/v1/models/seed-lstm/sessions", json={"session_id": "kept"})
        assert created.status_code == 201
        first = post_chunk(client, "kept", inputs[:2], offset=0)
        assert first.status_code == 200
    assert "embedded redis-server at redis://127.0.0.1:" in log_path.read_text()
    assert any((tmp_path / "redis-data").rglob("*.aof*"))

    with (
        ServiceProcess(None, DEMO_DIR, env=env, log_path=log_path) as service,
        httpx.Client(base_url=service.url, timeout=10) as client,
    ):
        assert client.get("/v1/sessions/kept").json()["steps"] == 2
        second = post_chunk(client, "kept", inputs[2:], offset=2)
        assert second.status_code == 200
    outputs = first.json()["outputs"] + second.json()["outputs"]
    assert outputs == full.json()["outputs"]


def test_a_busy_grpc_port_is_refused_before_anything_starts(tmp_path):
    """The workers share the gRPC port with SO_REUSEPORT, which would also let a second
    `lstm-serve` share another's port unnoticed: it must refuse to start instead."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as grpc binds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "service.cli",
                "--port",
                str(free_port()),
                "--grpc-port",
                str(port),
            ],
            env={**os.environ, "LSTM_DATA_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert f"gRPC port 127.0.0.1:{port} is not free" in done.stderr
    assert not any(tmp_path.iterdir())  # no embedded Redis was started in its data dir
