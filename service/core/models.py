"""Model loading: a `.keras` or `.h5` file (Keras 3 or Keras 2) becomes a checked runner."""

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from service.core import activations  # noqa: F401  (registers legacy_hard_sigmoid)
from service.core.keras2_file import Keras2File, is_keras2_file, read_keras2_file
from service.core.keras2_plan import Keras2Chain, build_keras2_runner, read_chain
from service.core.keras2_reference import NUMPY_REFERENCE, numpy_reference, tf_keras_reference
from service.core.plan import build_runner
from service.core.probe import PROBE_TOLERANCE, keras_reference, probe_sequence, scaled_error
from service.core.runner import StreamingRunner
from service.errors import ModelNotStreamable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str  # the fingerprint: what sessions are pinned to, equal on every replica
    runner: StreamingRunner
    path: Path
    probe_max_error: float
    probe_reference: str = ""
    number: int = 1  # the repository's version number (`<name>/<number>/model.keras`)


@dataclass(frozen=True)
class RefusedModel:
    name: str
    path: Path
    reason: str
    number: int = 1


def fingerprint(model: Any) -> str:
    """A version that changes whenever the architecture or any weight changes."""
    digest = hashlib.sha256(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    for weight in model.weights:
        digest.update(weight.path.encode())
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()[:16]


def _without_object_ids(config: Any) -> Any:
    # Keras 2 writes memory addresses (`shared_object_id`) into configs: not the model.
    if isinstance(config, dict):
        return {k: _without_object_ids(v) for k, v in config.items() if k != "shared_object_id"}
    if isinstance(config, list):
        return [_without_object_ids(item) for item in config]
    return config


def keras2_fingerprint(file: Keras2File) -> str:
    """The same idea for a Keras 2 file: its config and every weight, by layer."""
    config = json.dumps(_without_object_ids(file.config), sort_keys=True, default=str)
    digest = hashlib.sha256(config.encode())
    for path in sorted(file.weights):
        for name, array in file.weights[path]:
            digest.update(f"{'/'.join(path)}/{name}".encode())
            digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return digest.hexdigest()[:16]


def _refuse_above(error: float, tolerance: float, reference: str) -> None:
    if not error <= tolerance:
        raise ModelNotStreamable(
            f"the streaming runner differs from {reference} by {error:.3g} on the "
            f"probe sequence (tolerance {tolerance:g}); refusing to serve it"
        )


def _load_keras3(path: Path, probe_steps: int, tolerance: float) -> ServedModel:
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        raise ModelNotStreamable(f"cannot load {path.name}: {exc}") from exc
    runner = build_runner(model)
    probe = probe_sequence(runner.input_features, probe_steps, model.inputs[0].shape[1])
    actual, _ = runner.step(probe, runner.initial_state())
    error = scaled_error(actual, keras_reference(model, probe))
    _refuse_above(error, tolerance, "Keras model.predict")
    return ServedModel(
        path.stem, fingerprint(model), runner, path, error, f"keras {keras.__version__}"
    )


def _keras2_expected(
    path: Path, chain: Keras2Chain, probe: np.ndarray[Any, Any]
) -> tuple[Any, str]:
    try:
        answer = tf_keras_reference(path, probe)
    except Exception as exc:  # tf_keras raises many types for files it cannot rebuild
        log.warning("tf_keras cannot load %s (%s); probing against numpy float64", path, exc)
        answer = None
    return answer or (numpy_reference(chain, probe), NUMPY_REFERENCE)


def _load_keras2(path: Path, probe_steps: int, tolerance: float) -> ServedModel:
    file = read_keras2_file(path)
    chain = read_chain(file)
    runner = build_keras2_runner(chain)
    probe = probe_sequence(runner.input_features, probe_steps, chain.input_shape[1])
    actual, _ = runner.step(probe, runner.initial_state())
    expected, reference = _keras2_expected(path, chain, probe)
    error = scaled_error(actual, expected)
    _refuse_above(error, tolerance, f"Keras 2 ({reference})")
    return ServedModel(path.stem, keras2_fingerprint(file), runner, path, error, reference)


def load_model(
    path: Path, probe_steps: int = 64, tolerance: float = PROBE_TOLERANCE
) -> ServedModel:
    """A checked runner for a `.keras` or `.h5` file; Keras 2 files are read without
    Keras 3, which would refuse them or change their numbers."""
    if is_keras2_file(path):
        return _load_keras2(path, probe_steps, tolerance)
    return _load_keras3(path, probe_steps, tolerance)
