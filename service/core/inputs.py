"""Client sequences to float32 arrays, refused with `invalid_input` when malformed."""

from typing import Any

import numpy as np

from service.errors import InvalidInput

Floats = np.ndarray[Any, Any]  # float32


def as_sequence(rows: Any, features: int, max_steps: int) -> Floats:
    """A (T, F) float32 array from a list of T rows of F finite numbers."""
    if not isinstance(rows, list) or not rows:
        raise InvalidInput(
            "inputs must be a non-empty list of timesteps", expected_features=features
        )
    if len(rows) > max_steps:
        raise InvalidInput(
            f"{len(rows)} timesteps exceed the limit of {max_steps} per call",
            max_steps=max_steps,
        )
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != features:
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise InvalidInput(
                f"timestep {index} has {got} values; the model takes {features} features",
                timestep=index,
                expected_features=features,
            )
    try:
        with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
            array = np.array(rows, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"inputs must be numbers: {exc}") from exc
    if not np.isfinite(array).all():
        raise InvalidInput(
            "inputs must be finite: NaN, Infinity and values beyond float32 range are refused"
        )
    return array
