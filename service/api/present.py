"""Domain objects to JSON-ready dicts (returned as JSONResponse, skipping re-validation)."""

from datetime import UTC, datetime
from typing import Any

from service.core.models import ServedModel
from service.core.session_record import SessionRecord
from service.core.sessions import ChunkResult


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def model_info(model: ServedModel) -> dict[str, Any]:
    runner = model.runner
    return {
        "name": model.name,
        "version": model.version,
        "input_features": runner.input_features,
        "output_features": runner.output_features,
        "per_step": runner.per_step,
        "layers": [
            {
                "name": layer.name,
                "kind": layer.kind,
                "units": layer.units,
                "state": list(layer.state_names),
            }
            for layer in runner.recurrent_layers
        ],
        "state_bytes": runner.state_bytes,
    }


def session_info(session_id: str, record: SessionRecord) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "model": record.model,
        "model_version": record.model_version,
        "steps": record.steps,
        "created_at": _iso(record.created_ms),
        "updated_at": _iso(record.updated_ms),
        "expires_at": _iso(record.updated_ms + record.ttl_seconds * 1000),
    }


def chunk_result(session_id: str, result: ChunkResult) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "offset": result.offset,
        "steps": result.record.steps,
        "replayed": result.replayed,
        "outputs": result.outputs.tolist(),
    }
