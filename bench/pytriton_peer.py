"""The peer: PyTriton (Triton's C++ HTTP front end) serving the same work per chunk as
`sensor-lstm` in numpy, with each session's state in a dict in memory (no Redis, nothing
durable, nothing shared between replicas).

    python -m bench.pytriton_peer export WEIGHTS_NPZ       (main environment: needs Keras)
    python -m bench.pytriton_peer serve WEIGHTS_NPZ --port P   (the bench's PyTriton venv)

A request is the Open Inference Protocol's JSON: `session` (BYTES, shape [1, 1]) names the
session, `inputs` (FP32, shape [1, T, 16]) is the chunk; the answer's `outputs` is
[1, T, 8]. An unknown session starts from zeros. Requests that Triton's dynamic batcher
hands over together run as one numpy call per chunk length.
"""

import argparse
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]
UNITS = 64
FEATURES = 16
OUTPUTS = 8
MODEL = "sensor-lstm"


def export(model_path: Path, target: Path) -> None:
    import keras

    model = keras.saving.load_model(model_path, compile=False)
    weights = [np.asarray(w, dtype=np.float32) for w in model.get_weights()]
    shapes = [w.shape for w in weights]
    gates = 4 * UNITS
    lstm1 = [(FEATURES, gates), (UNITS, gates), (gates,)]
    lstm2 = [(UNITS, gates), (UNITS, gates), (gates,)]
    expected = [*lstm1, *lstm2, (UNITS, OUTPUTS), (OUTPUTS,)]
    if shapes != expected:
        raise SystemExit(f"{model_path} is not two LSTM({UNITS}) and a Dense({OUTPUTS}): {shapes}")
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, *weights)


def _sigmoid(x: Array) -> Array:
    return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


class NumpyLstm:
    """Keras' LSTM (gates i, f, c, o; sigmoid and tanh) twice, then the Dense head."""

    def __init__(self, weights: list[Array]) -> None:
        self.layers = [tuple(weights[i : i + 3]) for i in (0, 3)]
        self.head = (weights[6], weights[7])

    def step(self, x: Array, state: Array) -> tuple[Array, Array]:
        """x: (B, T, F); state: (B, 4 * UNITS) as h1, c1, h2, c2. Returns (B, T, 8), state."""
        h1, c1, h2, c2 = (state[:, i * UNITS : (i + 1) * UNITS] for i in range(4))
        outputs = np.empty((x.shape[0], x.shape[1], OUTPUTS), dtype=np.float32)
        for t in range(x.shape[1]):
            h1, c1 = self._cell(self.layers[0], x[:, t], h1, c1)
            h2, c2 = self._cell(self.layers[1], h1, h2, c2)
            outputs[:, t] = h2 @ self.head[0] + self.head[1]
        return outputs, np.concatenate([h1, c1, h2, c2], axis=1)

    @staticmethod
    def _cell(weights: tuple[Array, ...], x: Array, h: Array, c: Array) -> tuple[Array, Array]:
        kernel, recurrent, bias = weights
        z = x @ kernel + h @ recurrent + bias
        i, f, g, o = (z[:, k * UNITS : (k + 1) * UNITS] for k in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        return _sigmoid(o) * np.tanh(c), c


class Sessions:
    """The infer function: each request's session state from a dict, back to the dict."""

    def __init__(self, model: NumpyLstm) -> None:
        self.model = model
        self.states: dict[bytes, Array] = {}

    def __call__(self, requests: list[Any]) -> list[dict[str, Array]]:
        answers: list[dict[str, Array] | None] = [None] * len(requests)
        by_length: dict[int, list[int]] = {}
        for index, request in enumerate(requests):
            by_length.setdefault(request["inputs"].shape[1], []).append(index)
        for indexes in by_length.values():
            ids = [bytes(requests[i]["session"].reshape(-1)[0]) for i in indexes]
            x = np.concatenate([requests[i]["inputs"] for i in indexes]).astype(np.float32)
            zeros = np.zeros(4 * UNITS, dtype=np.float32)
            state = np.stack([self.states.get(key, zeros) for key in ids])
            outputs, state = self.model.step(x, state)
            for row, (i, key) in enumerate(zip(indexes, ids, strict=True)):
                self.states[key] = state[row]
                answers[i] = {"outputs": outputs[row : row + 1]}
        return [answer for answer in answers if answer is not None]


def serve(
    weights_path: Path, host: str, port: int, grpc_port: int, metrics_port: int, workers: int
) -> None:
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    with np.load(weights_path) as archive:
        weights = [archive[f"arr_{i}"] for i in range(len(archive.files))]
    config = TritonConfig(
        http_address=host,
        http_port=port,
        grpc_address=host,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        allow_metrics=False,
        log_verbose=0,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL,
            # Instances share one dict: any of them may serve any session's next chunk.
            infer_func=[Sessions(NumpyLstm(weights))] * workers,
            inputs=[
                Tensor(name="session", dtype=bytes, shape=(1,)),
                Tensor(name="inputs", dtype=np.float32, shape=(-1, FEATURES)),
            ],
            outputs=[Tensor(name="outputs", dtype=np.float32, shape=(-1, OUTPUTS))],
            config=ModelConfig(max_batch_size=64, batcher=DynamicBatcher()),
            strict=True,
        )
        triton.serve()


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pytriton_peer")
    parser.add_argument("action", choices=["export", "serve"])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--model-path", type=Path, help="export: the .keras file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--metrics-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--workers", type=int, default=1, help="model instances (threads)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    if args.action == "export":
        if args.model_path is None:
            sys.exit("export needs --model-path")
        export(args.model_path, args.weights)
    else:
        grpc_port = args.grpc_port or _free_port(args.host)
        metrics_port = args.metrics_port or _free_port(args.host)
        serve(args.weights, args.host, args.port, grpc_port, metrics_port, args.workers)


if __name__ == "__main__":
    main()
