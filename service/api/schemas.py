"""The native API's request and response bodies: the OpenAPI contract."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._:-]{0,127}$"

SEED_INPUTS: list[Any] = [[0.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]
SEED_OUTPUTS: list[Any] = [[0.0], [0.16222611], [0.12174768], [0.46444276]]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")


SEED_MODEL_INFO: dict[str, Any] = {
    "name": "seed-lstm",
    "version": "1f140261b48b4a70",
    "input_features": 2,
    "output_features": 1,
    "per_step": True,
    "layers": [{"name": "lstm", "kind": "LSTM", "units": 1, "state": ["h", "c"]}],
    "state_bytes": 8,
    "version_number": 1,
    "versions": [
        {
            "version_number": 1,
            "version": "1f140261b48b4a70",
            "input_features": 2,
            "output_features": 1,
            "per_step": True,
            "state_bytes": 8,
        }
    ],
    "refused_versions": [],
}


class RecurrentLayer(BaseModel):
    name: str
    kind: str = Field(examples=["LSTM"])
    units: int
    state: list[str] = Field(description="State vectors in stored order, each `units` long.")


class ModelVersionInfo(BaseModel):
    version_number: int = Field(description="The repository's number (`<name>/<number>/`).")
    version: str = Field(description="Fingerprint: what a session started on it is pinned to.")
    input_features: int
    output_features: int
    per_step: bool
    state_bytes: int


class RefusedVersion(BaseModel):
    version_number: int
    reason: str = Field(description="Why the file is not served, naming the layer at fault.")


class ModelInfo(BaseModel):
    """The latest version in full, and every version served."""

    name: str = Field(examples=["seed-lstm"])
    version: str = Field(description="Fingerprint of the architecture and weights.")
    input_features: int
    output_features: int
    per_step: bool = Field(
        description="True: each chunk returns one output per timestep. False: only the last."
    )
    layers: list[RecurrentLayer]
    state_bytes: int = Field(description="Size of one session's recurrent state, float32.")
    version_number: int = Field(description="The latest version's number: new sessions' default.")
    versions: list[ModelVersionInfo] = Field(description="Every version served, oldest first.")
    refused_versions: list[RefusedVersion] = Field(
        description="Versions in the repository that are not served, and why."
    )

    model_config = ConfigDict(json_schema_extra={"examples": [SEED_MODEL_INFO]})


class RefusedModelInfo(BaseModel):
    name: str
    version_number: int
    reason: str = Field(description="Why the file is not served, naming the layer at fault.")


class ModelList(BaseModel):
    models: list[ModelInfo]
    refused: list[RefusedModelInfo] = Field(
        description="Files in the model directory that are not served, and why."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "models": [SEED_MODEL_INFO],
                    "refused": [
                        {
                            "name": "bidi",
                            "version_number": 1,
                            "reason": "layer 'bidirectional' (Bidirectional) is not supported: "
                            "a bidirectional layer reads the sequence backwards from its end",
                        }
                    ],
                }
            ]
        }
    )


class PredictRequest(_Request):
    inputs: list[list[float]] = Field(
        description="T timesteps of F features each.", examples=[SEED_INPUTS]
    )

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"inputs": SEED_INPUTS}]},
    )


class PredictResponse(BaseModel):
    model: str
    model_version: str
    outputs: list[list[float]] | list[float] = Field(
        description="T x U outputs, or U when the model returns only the last step."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"model": "seed-lstm", "model_version": "1f140261b48b4a70", "outputs": SEED_OUTPUTS}
            ]
        }
    )


class CreateSessionRequest(_Request):
    session_id: str | None = Field(
        None,
        pattern=SESSION_ID_PATTERN,
        description="Your own id; omitted: the server generates an unguessable one.",
    )
    ttl_seconds: int | None = Field(
        None, gt=0, description="Lifetime after the last write. Default 24 h."
    )
    version: int | None = Field(
        None, gt=0, description="Version number to pin the session to; omitted: the latest."
    )

    model_config = ConfigDict(json_schema_extra={"examples": [{"ttl_seconds": 3600}]})


class ResetRequest(_Request):
    version: int | None = Field(
        None, gt=0, description="Version number to move the session to; omitted: the latest."
    )

    model_config = ConfigDict(json_schema_extra={"examples": [{"version": 2}]})


class SessionInfo(BaseModel):
    session_id: str
    model: str
    model_version: str
    steps: int = Field(description="Timesteps applied so far: the next chunk's offset.")
    created_at: datetime
    updated_at: datetime
    expires_at: datetime

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "session_id": "b1d6Jc2Qe1pX4Zr8vY0kLm3N",
                    "model": "seed-lstm",
                    "model_version": "1f140261b48b4a70",
                    "steps": 0,
                    "created_at": "2026-11-28T06:00:00Z",
                    "updated_at": "2026-11-28T06:00:00Z",
                    "expires_at": "2026-11-29T06:00:00Z",
                }
            ]
        }
    )


class ChunkRequest(_Request):
    inputs: list[list[float]] = Field(description="T timesteps of F features each.")
    offset: int | None = Field(
        None,
        ge=0,
        description="Index of the chunk's first timestep. Given: must equal the session's "
        "`steps` (a repeat of the last chunk is answered again). Omitted: appended.",
    )

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"inputs": SEED_INPUTS[:2], "offset": 0}]}
    )


class ChunkResponse(BaseModel):
    session_id: str
    offset: int = Field(description="Index of this chunk's first timestep.")
    steps: int = Field(description="Timesteps applied after this chunk.")
    replayed: bool = Field(description="True: a retry of the last chunk, answered from storage.")
    outputs: list[list[float]] | list[float]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "session_id": "b1d6Jc2Qe1pX4Zr8vY0kLm3N",
                    "offset": 0,
                    "steps": 2,
                    "replayed": False,
                    "outputs": SEED_OUTPUTS[:2],
                }
            ]
        }
    )


class ChunkItem(_Request):
    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    inputs: list[list[float]] = Field(description="T timesteps of F features each.")
    offset: int | None = Field(
        None, ge=0, description="As on `POST /v1/sessions/{session_id}/predict`."
    )


class ChunksRequest(_Request):
    chunks: list[ChunkItem] = Field(
        min_length=1,
        description="Chunks of any sessions, of any models served, applied in this order; "
        "at most `LSTM_MAX_CHUNKS_PER_REQUEST` (256 by default).",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "chunks": [
                        {"session_id": "sensor-17", "inputs": SEED_INPUTS[:1], "offset": 0},
                        {"session_id": "sensor-18", "inputs": SEED_INPUTS[:2]},
                        {"session_id": "sensor-17", "inputs": SEED_INPUTS[1:2], "offset": 1},
                    ]
                }
            ]
        }
    )


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(description="`ready` or `not ready`.")
    checks: dict[str, str]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "ready", "checks": {"redis": "ok", "models": "2 loaded"}}]
        }
    )


class ErrorDetail(BaseModel):
    code: str
    message: str

    model_config = ConfigDict(extra="allow")


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **details}}


class ChunkError(BaseModel):
    session_id: str
    error: ErrorDetail


class ChunksResponse(BaseModel):
    results: list[ChunkResponse | ChunkError] = Field(
        description="One per chunk, in request order: the chunk's answer, or its error "
        "(same codes as the single route; a failed chunk changed nothing)."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "results": [
                        {
                            "session_id": "sensor-17",
                            "offset": 0,
                            "steps": 1,
                            "replayed": False,
                            "outputs": SEED_OUTPUTS[:1],
                        },
                        {
                            "session_id": "sensor-18",
                            "error": {
                                "code": "session_not_found",
                                "message": "session 'sensor-18' does not exist or has expired",
                                "session_id": "sensor-18",
                            },
                        },
                        {
                            "session_id": "sensor-17",
                            "offset": 1,
                            "steps": 2,
                            "replayed": False,
                            "outputs": SEED_OUTPUTS[1:2],
                        },
                    ]
                }
            ]
        }
    )
