"""What the two baseline apps share: the request body, the session record and the routes
that create sessions, all on the service's own Redis store (same Lua CAS, same keys)."""

import os
import struct
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.store.base import CasOutcome
from service.store.redis_store import RedisStateStore

NAMESPACE = "_"
_HEADER = struct.Struct("<4sHHQQ")  # magic, format, reserved, revision | steps
TOKEN_BYTES = 16


class ChunkBody(BaseModel):
    inputs: list[list[float]]
    offset: int | None = None


class CreateBody(BaseModel):
    session_id: str


@dataclass(frozen=True)
class BaselineRecord:
    """Revision and step count, then the state bytes and the last chunk's output bytes."""

    revision: int
    steps: int
    state: bytes
    last_outputs: bytes = b""

    @property
    def token(self) -> bytes:
        return _HEADER.pack(b"BNCH", 1, 0, self.revision, 0)[:TOKEN_BYTES]

    def encode(self) -> bytes:
        return (
            _HEADER.pack(b"BNCH", 1, 0, self.revision, self.steps)
            + self.state
            + (self.last_outputs)
        )

    @classmethod
    def decode(cls, blob: bytes, state_bytes: int) -> "BaselineRecord":
        _, _, _, revision, steps = _HEADER.unpack_from(blob, 0)
        start = _HEADER.size
        return cls(revision, steps, blob[start : start + state_bytes], blob[start + state_bytes :])


def store_from_env() -> RedisStateStore:
    return RedisStateStore.from_url(os.environ["LSTM_REDIS_URL"], timeout_seconds=30.0)


def add_session_routes(app: FastAPI) -> None:
    """Session creation (a zero state of `app.state.state_bytes`) and readiness."""

    @app.post("/v1/models/{model}/sessions", status_code=201)
    async def create(model: str, body: CreateBody) -> JSONResponse:
        record = BaselineRecord(0, 0, bytes(app.state.state_bytes))
        blob = record.encode()
        if not await app.state.store.create(NAMESPACE, body.session_id, blob, 86_400_000):
            return JSONResponse({"error": "exists"}, status_code=409)
        return JSONResponse({"session_id": body.session_id, "model": model}, status_code=201)

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        await app.state.store.ping()
        return {"status": "ready"}


async def load(app: FastAPI, session_id: str, state_bytes: int) -> BaselineRecord | None:
    blob = await app.state.store.get(NAMESPACE, session_id)
    return None if blob is None else BaselineRecord.decode(blob, state_bytes)


async def save(app: FastAPI, session_id: str, old: BaselineRecord, new: BaselineRecord) -> bool:
    outcome = await app.state.store.compare_and_set(
        NAMESPACE, session_id, old.token, new.encode(), 86_400_000
    )
    return bool(outcome is CasOutcome.APPLIED)
