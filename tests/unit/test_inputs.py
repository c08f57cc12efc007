import numpy as np
import pytest

from service.core.inputs import as_sequence
from service.errors import InvalidInput


def test_valid_rows_become_float32():
    array = as_sequence([[1, 2.5], [0, -1e-3]], features=2, max_steps=10)
    assert array.dtype == np.float32 and array.shape == (2, 2)
    assert array[0, 1] == np.float32(2.5)


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ([], "non-empty"),
        ([[1, 2], [3]], "timestep 1 has 1 values"),
        ([[1, 2, 3]], "takes 2 features"),
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
        as_sequence(rows, features=2, max_steps=10)
    assert fragment in excinfo.value.message
    assert excinfo.value.status == 422
