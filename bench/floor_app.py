"""The floor: the least a streaming endpoint can do. It parses the same JSON, does the
same Redis read and compare-and-set on a state of the same size, and returns a constant
answer of the same size as the service's. No model.

Run: LSTM_REDIS_URL=... uvicorn bench.floor_app:create_app --factory
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from bench.baseline import (
    BaselineRecord,
    ChunkBody,
    add_session_routes,
    load,
    save,
    store_from_env,
)

STATE_BYTES = 1024  # sensor-lstm: two LSTM(64), h and c, float32
OUTPUT_FEATURES = 8
# A float32 value printed as the service prints it (via float64), so answers match in size.
CONSTANT = 0.12345679104328156


def constant_outputs(steps: int) -> list[list[float]]:
    return [[CONSTANT] * OUTPUT_FEATURES for _ in range(steps)]


def create_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = store_from_env()
        app.state.state_bytes = STATE_BYTES
        yield
        await app.state.store.close()

    app = FastAPI(title="floor", lifespan=lifespan)
    add_session_routes(app)

    @app.post("/v1/sessions/{session_id}/predict")
    async def predict_chunk(session_id: str, body: ChunkBody) -> JSONResponse:
        steps = len(body.inputs)
        outputs = bytes(4 * OUTPUT_FEATURES * steps)
        while True:
            record = await load(app, session_id, STATE_BYTES)
            if record is None:
                return JSONResponse({"error": "session_not_found"}, status_code=404)
            updated = BaselineRecord(
                record.revision + 1, record.steps + steps, record.state, outputs
            )
            if await save(app, session_id, record, updated):
                break
        return JSONResponse(
            {
                "session_id": session_id,
                "offset": record.steps,
                "steps": updated.steps,
                "replayed": False,
                "outputs": constant_outputs(steps),
            }
        )

    @app.post("/v1/models/{model}/predict")
    async def predict(model: str, body: ChunkBody) -> JSONResponse:
        return JSONResponse(
            {
                "model": model,
                "model_version": "0" * 16,
                "outputs": constant_outputs(len(body.inputs)),
            }
        )

    return app
