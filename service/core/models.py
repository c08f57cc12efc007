"""Model loading: `.keras` files in a directory become checked, served runners."""

import copy
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from service.core import activations  # noqa: F401  (registers legacy_hard_sigmoid)
from service.core.plan import build_runner
from service.core.runner import StreamingRunner
from service.errors import ModelNotFound, ModelNotStreamable

log = logging.getLogger(__name__)

# How far the runner may differ from Keras on the probe, as measured by `scaled_error`.
PROBE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    runner: StreamingRunner
    path: Path
    probe_max_error: float


@dataclass(frozen=True)
class RefusedModel:
    name: str
    path: Path
    reason: str


def fingerprint(model: Any) -> str:
    """A version that changes whenever the architecture or any weight changes."""
    digest = hashlib.sha256(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    for weight in model.weights:
        digest.update(weight.path.encode())
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()[:16]


def _stateless_config(config: Any) -> Any:
    """The same config with stateful layers made stateless and batch sizes freed."""
    if isinstance(config, dict):
        out = {key: _stateless_config(value) for key, value in config.items()}
        if out.get("stateful") is True:
            out["stateful"] = False
        for key in ("batch_shape", "batch_input_shape"):
            if isinstance(out.get(key), list) and out[key]:
                out[key] = [None, *out[key][1:]]
        if "batch_size" in out and "batch_shape" in out:
            out["batch_size"] = None
        return out
    if isinstance(config, list):
        return [_stateless_config(item) for item in config]
    return config


def keras_reference(model: Any, inputs: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Keras's own `predict` on a stateless twin of `model`, for one (T, F) sequence."""
    twin = model.__class__.from_config(_stateless_config(copy.deepcopy(model.get_config())))
    twin.set_weights(model.get_weights())
    return np.asarray(twin.predict(inputs[None], verbose=0)[0], dtype=np.float32)


def scaled_error(actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> float:
    """Largest difference relative to the magnitude (absolute below 1): float32 rounding
    grows with the value, and which last bits differ depends on the CPU's kernels."""
    scale = np.maximum(1.0, np.abs(expected))
    return float(np.max(np.abs(actual - expected) / scale))


def probe_error(model: Any, runner: StreamingRunner, steps: int) -> float:
    """Largest scaled difference between the runner and Keras on a fixed random sequence."""
    fixed_steps = model.inputs[0].shape[1]
    steps = int(fixed_steps) if fixed_steps is not None else steps
    probe = np.random.default_rng(20240521).normal(size=(steps, runner.input_features))
    probe = probe.astype(np.float32)
    expected = keras_reference(model, probe)
    actual, _ = runner.step(probe, runner.initial_state())
    return scaled_error(actual, expected)


def load_model(
    path: Path, probe_steps: int = 64, tolerance: float = PROBE_TOLERANCE
) -> ServedModel:
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        raise ModelNotStreamable(f"cannot load {path.name}: {exc}") from exc
    runner = build_runner(model)
    error = probe_error(model, runner, probe_steps)
    if not error <= tolerance:
        raise ModelNotStreamable(
            f"the streaming runner differs from Keras model.predict by {error:.3g} on the "
            f"probe sequence (tolerance {tolerance:g}); refusing to serve it"
        )
    return ServedModel(path.stem, fingerprint(model), runner, path, error)


class ModelRegistry:
    """The models this process serves, by name, and the files it refused."""

    def __init__(self, models: list[ServedModel], refused: list[RefusedModel]) -> None:
        self._models = {model.name: model for model in models}
        self.refused = refused

    @classmethod
    def from_directory(
        cls, directory: Path, probe_steps: int = 64, tolerance: float = PROBE_TOLERANCE
    ) -> "ModelRegistry":
        models, refused = [], []
        for path in sorted(Path(directory).glob("*.keras")):
            try:
                model = load_model(path, probe_steps, tolerance)
            except ModelNotStreamable as exc:
                log.error("refusing model %s: %s", path.name, exc)
                refused.append(RefusedModel(path.stem, path, str(exc)))
                continue
            log.info(
                "serving model %s version %s (probe error %.2g)",
                model.name,
                model.version,
                model.probe_max_error,
            )
            models.append(model)
        return cls(models, refused)

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The model served as `name`; with `version`, only if that is the one served."""
        try:
            model = self._models[name]
        except KeyError:
            raise ModelNotFound(name) from None
        if version is not None and version != model.version:
            raise ModelNotFound(name, version, model.version)
        return model

    def all(self) -> list[ServedModel]:
        return list(self._models.values())
