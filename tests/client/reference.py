"""Expected outputs straight from the server's stateless route, without the client."""

import httpx
import numpy as np

SENSOR = "sensor-lstm"
SENSOR_FEATURES = 16


def sensor_inputs(steps: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(steps, SENSOR_FEATURES)).astype(np.float32)


def stateless(url: str, model: str, inputs: np.ndarray) -> np.ndarray:
    response = httpx.post(
        f"{url}/v1/models/{model}/predict", json={"inputs": inputs.tolist()}, timeout=60
    )
    assert response.status_code == 200, response.text
    return np.array(response.json()["outputs"], dtype=np.float32)


def server_steps(url: str, session_id: str) -> int:
    response = httpx.get(f"{url}/v1/sessions/{session_id}", timeout=10)
    assert response.status_code == 200, response.text
    return int(response.json()["steps"])
