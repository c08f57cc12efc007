"""`lstm-stream` as a user runs it: a subprocess, killed or interrupted, then resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from lstm_stream_client.cli import main

from tests.client.conftest import CLIENT_DIR
from tests.client.reference import SENSOR, sensor_inputs, server_steps, stateless
from tests.faults import FaultyProxy
from tests.processes import ServiceProcess

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CLIENT_DIR), os.getcwd()])}


def lstm_stream(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lstm_stream_client.cli", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(*args: str) -> subprocess.CompletedProcess[str]:
    process = lstm_stream(*args)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def wait_for_progress(partial: Path, steps: int, process: subprocess.Popen[str]) -> str:
    """The session id, once the run has written at least `steps` steps of outputs."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            meta = json.loads(partial.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            meta = {"steps": 0}
        if meta["steps"] >= steps:
            return str(meta["session_id"])
        time.sleep(0.05)
    raise AssertionError(f"no progress to {steps} steps")


def test_killed_mid_run_then_resumed_gives_the_uninterrupted_output_bit_for_bit(
    served: ServiceProcess, tmp_path: Path
) -> None:
    # SIGKILL leaves no chance to clean up: whatever the server applied and the file did
    # not record is recovered by replay, through a proxy that keeps cutting connections.
    inputs = sensor_inputs(10_000, seed=21)
    np.save(tmp_path / "in.npy", inputs)
    out = tmp_path / "out.npy"
    with FaultyProxy(served.port, drop_before=0.05, drop_after=0.05, seed=3) as proxy:
        args = ("predict", SENSOR, str(tmp_path / "in.npy"), "--out", str(out))
        args += ("--url", proxy.url, "--chunk-steps", "100")
        first = lstm_stream(*args)
        session_id = wait_for_progress(tmp_path / "out.npy.partial.json", 3000, first)
        first.kill()
        first.communicate()
        assert not out.exists()
        # As if the killed run had sent one more chunk and died before its answer arrived.
        done = json.loads((tmp_path / "out.npy.partial.json").read_text())["steps"]
        lost = httpx.post(
            f"{served.url}/v1/sessions/{session_id}/predict",
            json={"inputs": inputs[done : done + 100].tolist(), "offset": done},
        )
        assert lost.status_code == 200, lost.text
        resumed = run(*args, "--session", session_id)
    assert resumed.returncode == 0, resumed.stderr
    assert np.array_equal(np.load(out), stateless(served.url, SENSOR, inputs))
    assert server_steps(served.url, session_id) == 10_000
    assert not (tmp_path / "out.npy.partial").exists()


def test_ctrl_c_tells_how_to_continue_and_csv_output_round_trips(
    served: ServiceProcess, tmp_path: Path
) -> None:
    inputs = sensor_inputs(1500, seed=22)
    np.savetxt(tmp_path / "in.csv", inputs, delimiter=",", fmt="%.9g")
    inputs = np.loadtxt(tmp_path / "in.csv", delimiter=",", dtype=np.float32)
    out = tmp_path / "out.csv"
    args = ("predict", SENSOR, str(tmp_path / "in.csv"), "--out", str(out))
    args += ("--url", served.url, "--chunk-steps", "20", "--session", "cli-ctrl-c")
    first = lstm_stream(*args)
    wait_for_progress(tmp_path / "out.csv.partial.json", 200, first)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 130
    assert "--session cli-ctrl-c" in stderr
    resumed = run(*args)
    assert resumed.returncode == 0, resumed.stderr
    outputs = np.loadtxt(out, delimiter=",", dtype=np.float32)
    assert np.array_equal(outputs, stateless(served.url, SENSOR, inputs))


def test_models_and_session_commands(
    served: ServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ("--url", served.url)
    assert main(["models", *url]) == 0
    assert SENSOR in capsys.readouterr().out
    created = httpx.post(
        f"{served.url}/v1/models/{SENSOR}/sessions", json={"session_id": "cli-commands"}
    )
    assert created.status_code == 201
    httpx.post(
        f"{served.url}/v1/sessions/cli-commands/predict",
        json={"inputs": sensor_inputs(3, seed=0).tolist()},
    )
    assert main(["session", "show", "cli-commands", *url]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 3
    assert main(["session", "reset", "cli-commands", *url]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 0
    assert main(["session", "delete", "cli-commands", *url]) == 0
    assert main(["session", "show", "cli-commands", *url]) == 1
    assert "session_not_found" in capsys.readouterr().err
