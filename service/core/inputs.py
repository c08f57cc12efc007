"""Inputs as float32 arrays: JSON rows converted once at the edge, then one check per model."""

from typing import TYPE_CHECKING, Any

import numpy as np

from service.core.arrays import F32, Floats
from service.errors import InvalidInput

if TYPE_CHECKING:
    from service.core.models import ServedModel


def as_array(rows: Any) -> Floats:
    """A (T, F) float32 array from a list of T rows of F numbers (ragged rows refused);
    values beyond float32 become infinite and `check_chunk` refuses them."""
    if not isinstance(rows, list) or not rows:
        raise InvalidInput("inputs must be a non-empty list of timesteps")
    try:
        with np.errstate(over="ignore"):
            array = np.array(rows, dtype=F32)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim != 2:
        raise _malformed(rows)
    return array


def _malformed(rows: list[Any]) -> InvalidInput:
    width = len(rows[0]) if isinstance(rows[0], list) else None
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            got = len(row) if isinstance(row, list) else type(row).__name__
            return InvalidInput(
                f"timestep {index} has {got} values; every timestep needs the same number "
                "of features",
                timestep=index,
            )
    return InvalidInput("inputs must be numbers")


def as_rows(model: "ServedModel", x: Floats) -> Floats:
    """A binary body's flat float32 values as rows of the model's features (arrays that
    already have rows pass unchanged)."""
    if x.ndim != 1:
        return x
    features = model.runner.input_features
    if x.size % features:
        raise InvalidInput(
            f"a binary body of {x.size} float32 values is not a whole number of timesteps "
            f"of {features} features",
            expected_features=features,
        )
    return x.reshape(-1, features)


def check_chunk(model: "ServedModel", x: Floats, max_steps: int) -> None:
    """Refuse a (T, F) chunk or a (B, T, F) batch the model cannot take, before anything
    is written: wrong features, empty, more than `max_steps` timesteps in all, non-finite."""
    features = model.runner.input_features
    if x.ndim not in (2, 3) or x.shape[-1] != features:
        layout = "[timesteps, features]" if x.ndim == 2 else "[batch, timesteps, features]"
        raise InvalidInput(
            f"inputs have shape {list(x.shape)}; model '{model.name}' takes {layout} with "
            f"{features} features",
            expected_features=features,
        )
    if x.size == 0:
        raise InvalidInput("inputs must hold at least one sequence of at least one timestep")
    steps = x.size // features
    if steps > max_steps:
        shape = " x ".join(str(n) for n in x.shape[:-1])
        raise InvalidInput(
            f"{shape} timesteps exceed the limit of {max_steps} per call", max_steps=max_steps
        )
    if not np.isfinite(x).all():
        raise InvalidInput(
            "inputs must be finite: NaN, Infinity and values beyond float32 range are refused"
        )
