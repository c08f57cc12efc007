"""The naive approach: a FastAPI endpoint around a Keras `stateful=True` twin of the model.
Each chunk restores the session's state from Redis into the layers' state variables, calls
`model.predict`, reads the states back and stores them (same Redis CAS as the service).
The layers' states are shared, so chunks take turns under a lock.

Run: LSTM_REDIS_URL=... uvicorn bench.naive_app:create_app --factory
"""

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse

import service  # noqa: F401  (environment defaults before TensorFlow loads)
from bench.baseline import (
    BaselineRecord,
    ChunkBody,
    add_session_routes,
    load,
    save,
    store_from_env,
)
from service.settings import DEMO_MODEL_DIR


def stateful_twin(path: Path) -> Any:
    """The same layers with `stateful=True` and a batch of one, and the same weights."""
    import keras

    source = keras.saving.load_model(path, compile=False)
    layers: list[Any] = [keras.Input(batch_shape=(1, None, source.inputs[0].shape[-1]))]
    for layer in source.layers:
        config = layer.get_config()
        if "stateful" in config:
            config["stateful"] = True
        layers.append(layer.__class__.from_config(config))
    model = keras.Sequential(layers)
    model.set_weights(source.get_weights())
    return model


class StatefulModel:
    """The state of every recurrent layer as one float32 vector, in layer order."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.variables = [v for layer in model.layers for v in getattr(layer, "states", None) or []]
        self.state_bytes = sum(int(np.prod(v.shape)) for v in self.variables) * 4

    def restore(self, state: bytes) -> None:
        flat = np.frombuffer(state, dtype="<f4")
        offset = 0
        for variable in self.variables:
            size = int(np.prod(variable.shape))
            variable.assign(flat[offset : offset + size].reshape(variable.shape))
            offset += size

    def read(self) -> bytes:
        return b"".join(np.asarray(v.numpy(), dtype="<f4").tobytes() for v in self.variables)

    def predict(self, inputs: list[list[float]]) -> np.ndarray[Any, Any]:
        x = np.asarray(inputs, dtype=np.float32)[None]
        return np.asarray(self.model.predict(x, verbose=0)[0])


def create_app() -> FastAPI:
    model_path = Path(os.environ.get("BENCH_MODEL_PATH", DEMO_MODEL_DIR / "sensor-lstm.keras"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = store_from_env()
        app.state.model = StatefulModel(await asyncio.to_thread(stateful_twin, model_path))
        app.state.state_bytes = app.state.model.state_bytes
        app.state.lock = asyncio.Lock()
        yield
        await app.state.store.close()

    app = FastAPI(title="naive", lifespan=lifespan)
    add_session_routes(app)

    @app.post("/v1/sessions/{session_id}/predict")
    async def predict_chunk(session_id: str, body: ChunkBody) -> JSONResponse:
        model: StatefulModel = app.state.model
        while True:
            record = await load(app, session_id, model.state_bytes)
            if record is None:
                return JSONResponse({"error": "session_not_found"}, status_code=404)
            async with app.state.lock:
                model.restore(record.state)
                outputs = model.predict(body.inputs)
                state = model.read()
            updated = BaselineRecord(
                record.revision + 1, record.steps + len(body.inputs), state, outputs.tobytes()
            )
            if await save(app, session_id, record, updated):
                break
        return JSONResponse(
            {
                "session_id": session_id,
                "offset": record.steps,
                "steps": updated.steps,
                "replayed": False,
                "outputs": outputs.tolist(),
            }
        )

    @app.post("/v1/models/{model}/predict")
    async def predict(model: str, body: ChunkBody) -> JSONResponse:
        served: StatefulModel = app.state.model
        async with app.state.lock:
            served.restore(bytes(served.state_bytes))
            outputs = served.predict(body.inputs)
        return JSONResponse({"model": model, "model_version": "naive", "outputs": outputs.tolist()})

    return app
