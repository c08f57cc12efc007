"""Input and output files of the CLI: `.npy` or `.csv`, T rows by F columns."""

from pathlib import Path

import numpy as np

from lstm_stream_client.wire import Floats


def read_sequence(path: Path) -> Floats:
    """A (T, F) float32 array; a `.csv` may start with one header line."""
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif path.suffix == ".csv":
        array = _read_csv(path)
    else:
        raise ValueError(f"{path}: expected a .npy or .csv file")
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{path}: expected T rows of F values, got shape {array.shape}")
    return array


def _read_csv(path: Path) -> Floats:
    with path.open() as lines:
        first = lines.readline()
    try:
        [float(value) for value in first.split(",")]
        skip = 0
    except ValueError:
        skip = 1
    return np.loadtxt(path, delimiter=",", dtype=np.float32, skiprows=skip, ndmin=2)


def write_outputs(path: Path, outputs: Floats) -> None:
    """`.npy` keeps the float32 bits; `.csv` writes 9 significant digits, which read back
    as float32 to the same bits."""
    if path.suffix == ".npy":
        np.save(path, outputs, allow_pickle=False)
    elif path.suffix == ".csv":
        np.savetxt(path, np.atleast_2d(outputs), delimiter=",", fmt="%.9g")
    else:
        raise ValueError(f"{path}: expected a .npy or .csv file")
