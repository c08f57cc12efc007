"""Per-key request rate and the memory bound on a request's tensors, over HTTP."""

import json

import numpy as np
import pytest

from tests.apps import app_with

KEY, OTHER = "rate-key-one", "rate-key-two"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def v2_batch(batch: int, steps: int, features: int = 16) -> dict:
    return {
        "inputs": [
            {
                "name": "inputs",
                "datatype": "FP32",
                "shape": [batch, steps, features],
                "parameters": {"binary_data_size": batch * steps * features * 4},
            }
        ]
    }


@pytest.fixture(scope="module")
def limited(client, settings):
    # 0.01 per second: no token comes back while the test runs, however slow the machine.
    with app_with(
        client, settings, api_keys=f"{KEY},{OTHER}", rate_limit_per_key=0.01, rate_limit_burst=3
    ) as test_client:
        yield test_client


def test_a_key_past_its_rate_is_429_with_retry_after_and_others_are_not(limited):
    answers = [limited.get("/v1/models", headers=bearer(KEY)) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 100
    assert limited.get("/v1/models", headers=bearer(OTHER)).status_code == 200
    v2 = limited.get("/v2/models/seed-lstm", headers=bearer(KEY))
    assert v2.status_code == 429 and isinstance(v2.json()["error"], str)
    assert limited.get("/healthz").status_code == 200  # health routes are never limited


def test_tensors_over_the_memory_bound_are_413_and_under_it_served(client, settings):
    # sensor-lstm: 16 inputs, 8 outputs, 256 floats of state. 1,000 rows of 1 step take
    # 4 * 1000 * (16 + 8 + 256) = 1,120,000 bytes.
    with app_with(client, settings, max_tensor_bytes=1_120_000) as small:
        for batch, status in ((1000, 200), (1001, 413)):
            raw = np.zeros((batch, 1, 16), np.float32).tobytes()
            header = json.dumps(v2_batch(batch, 1)).encode()
            response = small.post(
                "/v2/models/sensor-lstm/infer",
                content=header + raw,
                headers={"Inference-Header-Content-Length": str(len(header))},
            )
            assert response.status_code == status, response.text[:300]
        native = small.post(
            "/v1/models/sensor-lstm/predict", json={"inputs": [[0.0] * 16] * 46_000}
        )
        assert native.status_code == 413
        assert native.json()["error"]["code"] == "payload_too_large"
