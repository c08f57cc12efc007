from types import SimpleNamespace

import numpy as np
import pytest

from service.core.inputs import as_array, as_arrays, check_chunk
from service.errors import InvalidInput

# check_chunk reads only the model's name and its runner's input width.
MODEL = SimpleNamespace(name="m", runner=SimpleNamespace(input_features=2))


def test_valid_rows_become_float32():
    array = as_array([[1, 2.5], [0, -1e-3]])
    assert array.dtype == np.float32 and array.shape == (2, 2)
    assert array[0, 1] == np.float32(2.5)
    check_chunk(MODEL, array, max_steps=2)


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ([], "non-empty"),
        ([[1, 2], [3]], "timestep 1 has 1 values"),
        ([[1, 2, 3]], "2 features"),
        ([[]], "2 features"),
        ([[1, 2]] * 11, "exceed the limit of 10"),
        ([[1e39, 0]], "finite"),
        ([[float("nan"), 0]], "finite"),
        ([[float("inf"), 0]], "finite"),
        ([1, 2], "timestep 0"),
        ("abc", "non-empty list"),
    ],
)
def test_malformed_rows_are_invalid_input_with_a_clear_message(rows, fragment):
    with pytest.raises(InvalidInput) as excinfo:
        check_chunk(MODEL, as_array(rows), max_steps=10)
    assert fragment in excinfo.value.message
    assert excinfo.value.status == 422


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        ((1, 0, 2), "at least one timestep"),
        ((0, 3, 2), "at least one timestep"),
        ((3, 4, 2), "3 x 4 timesteps exceed the limit of 10"),
        ((1, 2, 3), "[batch, timesteps, features] with 2 features"),
        ((2,), "2 features"),
    ],
)
def test_batches_are_checked_against_the_total_timesteps(shape, fragment):
    with pytest.raises(InvalidInput) as excinfo:
        check_chunk(MODEL, np.zeros(shape, dtype=np.float32), max_steps=10)
    assert fragment in excinfo.value.message


def test_many_chunks_convert_as_each_would_alone():
    rng = np.random.default_rng(3)
    chunks = [
        rng.standard_normal((1, 2)).tolist(),
        [[1.0, 2.0], [3.0]],  # ragged, among chunks of its length and first row's width
        rng.standard_normal((2, 2)).tolist(),
        [],
        [[1e39, 0.0]],
        rng.standard_normal((1, 3)).tolist(),
        rng.standard_normal((1, 2)).tolist(),
        [[float("nan"), 1.0], [0.0, 0.0]],
    ]

    converted = as_arrays(chunks)

    for rows, got in zip(chunks, converted, strict=True):
        try:
            alone = as_array(rows)
        except InvalidInput as error:
            assert isinstance(got, InvalidInput) and got.message == error.message
            continue
        assert not isinstance(got, InvalidInput)
        array, finite = got
        assert array.dtype == alone.dtype and array.shape == alone.shape
        assert array.tobytes() == alone.tobytes()
        assert finite == bool(np.isfinite(alone).all())
    assert [isinstance(got, InvalidInput) for got in converted] == [
        False, True, False, True, False, False, False, False
    ]  # fmt: skip
    assert [got[1] for got in converted if not isinstance(got, InvalidInput)] == [
        True, True, False, True, True, False
    ]  # fmt: skip
