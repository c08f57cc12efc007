"""Inputs as float32 arrays: JSON rows converted once at the edge, then one check per model."""

import itertools
from typing import TYPE_CHECKING, Any, cast

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


def as_arrays(chunks: list[list[list[float]]]) -> list[tuple[Floats, bool] | InvalidInput]:
    """`as_array` of each chunk (already lists of float rows), with whether its values are
    all finite, or its error. Chunks of one shape are converted and checked together: one
    numpy call for all of them instead of two per chunk."""
    converted: list[tuple[Floats, bool] | InvalidInput | None] = [None] * len(chunks)
    shapes: dict[tuple[int, int], list[int]] = {}
    for index, rows in enumerate(chunks):
        if rows:
            shapes.setdefault((len(rows), len(rows[0])), []).append(index)
    for (steps, features), indices in shapes.items():
        # All their rows as one list: numpy converts a list of rows faster than a list of
        # lists of rows.
        rows = list(itertools.chain.from_iterable(chunks[index] for index in indices))
        try:
            with np.errstate(over="ignore"):
                arrays = np.array(rows, dtype=F32).reshape(len(indices), steps, features)
        except ValueError:  # some chunk has ragged rows: each on its own says which
            continue
        finite = cast(list[bool], np.isfinite(arrays).all(axis=(1, 2)).tolist())
        for row, index in enumerate(indices):
            converted[index] = (arrays[row], finite[row])
    for index, rows in enumerate(chunks):
        if converted[index] is None:
            try:
                array = as_array(rows)
                converted[index] = (array, bool(np.isfinite(array).all()))
            except InvalidInput as error:
                converted[index] = error
    return converted  # type: ignore[return-value]


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


def check_chunk(
    model: "ServedModel", x: Floats, max_steps: int, finite: bool | None = None
) -> None:
    """Refuse a (T, F) chunk or a (B, T, F) batch the model cannot take, before anything
    is written: wrong features, empty, more than `max_steps` timesteps in all, non-finite
    (`finite`: already known, else checked here)."""
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
    if not (np.isfinite(x).all() if finite is None else finite):
        raise InvalidInput(
            "inputs must be finite: NaN, Infinity and values beyond float32 range are refused"
        )
