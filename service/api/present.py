"""Domain objects to JSON-ready dicts (returned as JSONResponse, skipping re-validation)."""

from datetime import UTC, datetime
from typing import Any, cast

import msgspec
import numpy as np

from service.api.schemas import error_body
from service.api.tensor_json import values_json
from service.core.models import RefusedModel, ServedModel
from service.core.repository import ModelRegistry
from service.core.session_record import SessionRecord
from service.core.sessions import ChunkResult
from service.errors import ServiceError


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _version_info(model: ServedModel) -> dict[str, Any]:
    runner = model.runner
    return {
        "version_number": model.number,
        "version": model.version,
        "input_features": runner.input_features,
        "output_features": runner.output_features,
        "per_step": runner.per_step,
        "state_bytes": runner.state_bytes,
    }


def model_info(model: ServedModel, models: ModelRegistry) -> dict[str, Any]:
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
        "version_number": model.number,
        "versions": [_version_info(version) for version in models.versions(model.name)],
        "refused_versions": [
            {"version_number": refused.number, "reason": refused.reason}
            for refused in models.refused_versions(model.name)
        ],
    }


def refused_model(refused: RefusedModel) -> dict[str, Any]:
    return {"name": refused.name, "version_number": refused.number, "reason": refused.reason}


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


class ChunkAnswer(msgspec.Struct):
    """A chunk's answer; msgspec encodes it as the dict of these fields in this order would
    be, and makes it without a Python call (`chunk_outcomes` maps it over columns)."""

    session_id: str
    offset: int
    steps: int
    replayed: bool
    outputs: Any  # lists of floats, or their JSON already (`msgspec.Raw`)


def chunk_result(
    session_id: str, result: ChunkResult, outputs: msgspec.Raw | list[Any] | None = None
) -> ChunkAnswer:
    """For msgspec's encoder. `outputs`: the outputs encoded already
    (`tensor_json.answer_parts`), or as lists encoded with the answer, if they are."""
    return ChunkAnswer(
        session_id,
        result.offset,
        result.record.steps,
        result.replayed,
        msgspec.Raw(values_json(result.outputs)) if outputs is None else outputs,
    )


def chunk_outcomes(
    session_ids: list[str], outcomes: list[ChunkResult | ServiceError]
) -> list[ChunkAnswer | dict[str, Any]]:
    # The outputs as lists in the answer: encoded with it, the same text as `values_json`
    # gives, without an encoder call per chunk.
    if len(outcomes) != len(session_ids):
        raise ValueError(f"{len(outcomes)} outcomes for {len(session_ids)} chunks")
    if set(map(type, outcomes)) == {ChunkResult}:  # no error: columns, no Python call per chunk
        records, offsets, outputs, replayed = zip(*cast(list[ChunkResult], outcomes), strict=True)
        steps = [record.steps for record in records]
        lists = map(np.ndarray.tolist, outputs)
        return list(map(ChunkAnswer, session_ids, offsets, steps, replayed, lists))
    return [
        {"session_id": session_id, **error_body(outcome.code, outcome.message, **outcome.details)}
        if isinstance(outcome, ServiceError)
        else chunk_result(session_id, outcome, outcome.outputs.tolist())
        for session_id, outcome in zip(session_ids, outcomes, strict=True)
    ]
