"""Stream a sequence to lstm-stream in chunks with tritonclient (Open Inference Protocol)."""

import numpy as np
import tritonclient.http as httpclient


def stream_sequence(
    url: str, model: str, inputs: np.ndarray, chunk_steps: int, sequence_id: int | str
) -> np.ndarray:
    """Send `inputs` (T, F) as one sequence, `chunk_steps` timesteps per request."""
    client = httpclient.InferenceServerClient(url)  # "host:port", no scheme
    try:
        outputs = []
        for start in range(0, len(inputs), chunk_steps):
            chunk = inputs[None, start : start + chunk_steps].astype(np.float32)  # (1, t, F)
            tensor = httpclient.InferInput("inputs", list(chunk.shape), "FP32")
            tensor.set_data_from_numpy(chunk)  # binary tensor data, the default
            result = client.infer(
                model,
                [tensor],
                sequence_id=sequence_id,
                sequence_start=start == 0,  # zero state: creates or resets the sequence
                sequence_end=start + chunk_steps >= len(inputs),  # deletes it after answering
            )
            outputs.append(result.as_numpy("outputs")[0])  # (t, U)
        return np.concatenate(outputs)
    finally:
        client.close()


if __name__ == "__main__":
    x = np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32)
    y = stream_sequence("localhost:8000", "sensor-lstm", x, chunk_steps=25, sequence_id=42)
    print(y.shape)  # (100, 8): bit-identical to POST /v1/models/sensor-lstm/predict on x
