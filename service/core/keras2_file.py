"""Keras 2 model files (`.h5`, and `tf_keras`'s `.keras` zip) read as plain JSON and arrays.

Nothing in the file is deserialized into objects: the config is JSON and the weights are
HDF5 datasets, so a file is understood without importing Keras (Keras 3 cannot load
these files, and a Keras 2 `Lambda` layer carries bytecode that must never be run).
"""

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from service.errors import ModelNotStreamable

Array = np.ndarray[Any, Any]
# Layer names from the top of the model down to one layer (nested models add a level).
LayerPath = tuple[str, ...]
# A layer's own weights in the order the layer created them, with their short names
# (`kernel`, `bias`, ...) where the file records them.
LayerWeights = list[tuple[str | None, Array]]

MODEL_CLASSES = ("Sequential", "Functional", "Model")


@dataclass(frozen=True)
class Keras2File:
    path: Path
    keras_version: str
    config: dict[str, Any]  # {"class_name": ..., "config": ...} of the whole model
    weights: dict[LayerPath, LayerWeights]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def keras_version_of(path: Path) -> str | None:
    """The Keras version that wrote `path` (None when the file does not say)."""
    try:
        if path.suffix == ".h5":
            with h5py.File(path, "r") as f:
                version = f.attrs.get("keras_version")
                return None if version is None else _text(version)
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read("metadata.json"))
            return str(metadata.get("keras_version")) if isinstance(metadata, dict) else None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def is_keras2_file(path: Path) -> bool:
    """`.h5` files (Keras 3 writes `.keras`) unless Keras 3 wrote them, and `.keras` zips
    whose metadata names Keras 2 (`tf_keras`)."""
    version = keras_version_of(path)
    if path.suffix == ".h5":
        return version is None or _major(version) < 3
    return version is not None and _major(version) == 2


def layers_of(config: dict[str, Any]) -> list[dict[str, Any]]:
    """A model config's layers: `config.layers`, or the bare list of older Sequentials."""
    inner = config.get("config")
    layers = inner if isinstance(inner, list) else (inner or {}).get("layers", [])
    return [layer for layer in layers if isinstance(layer, dict)]


def _leaves(config: dict[str, Any], prefix: LayerPath) -> list[LayerPath]:
    out: list[LayerPath] = []
    for layer in layers_of(config):
        path = (*prefix, _text(layer.get("config", {}).get("name", "")))
        if layer.get("class_name") in MODEL_CLASSES:
            out.extend(_leaves(layer, path))
        elif layer.get("class_name") != "InputLayer":
            out.append(path)
    return out


def _short_name(weight_name: str) -> str:
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def _h5_weights(group: Any, config: dict[str, Any]) -> dict[LayerPath, LayerWeights]:
    """Legacy h5: one group per top-level layer, listing its weights by name in order.
    A nested model's group lists all its layers' weights; each name starts with (or
    contains) the name of the layer that made it."""
    weights: dict[LayerPath, LayerWeights] = {}
    for layer in layers_of(config):
        name = _text(layer.get("config", {}).get("name", ""))
        if name not in group:
            continue
        layer_group = group[name]
        names = [_text(n) for n in layer_group.attrs.get("weight_names", [])]
        arrays = [(n, np.asarray(layer_group[n])) for n in names]
        if layer.get("class_name") not in MODEL_CLASSES:
            weights[(name,)] = [(_short_name(n), a) for n, a in arrays]
            continue
        for leaf in _leaves(layer, (name,)):
            weights[leaf] = [
                (_short_name(n), a) for n, a in arrays if leaf[-1] in n.split("/")[:-1]
            ]
    return weights


def _snake_case(name: str) -> str:
    intermediate = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", intermediate).lower()


def _vars_under(group: Any) -> LayerWeights:
    found: list[Any] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and name.split("/")[-1] == "vars" and len(obj):
            found.append(obj)

    group.visititems(visit)
    if len(found) > 1:
        raise ModelNotStreamable(f"unexpected weights layout under {group.name}")
    if not found:
        return []
    return [(None, np.asarray(found[0][str(i)])) for i in range(len(found[0]))]


def _zip_weights(
    group: Any, config: dict[str, Any], prefix: LayerPath = ()
) -> dict[LayerPath, LayerWeights]:
    """`tf_keras` `.keras`: layers are stored under the snake-cased class name, numbered
    in layer order (`lstm`, `lstm_1`), not under their own names."""
    weights: dict[LayerPath, LayerWeights] = {}
    used: dict[str, int] = {}
    for layer in layers_of(config):
        kind = _text(layer.get("class_name", ""))
        if kind == "InputLayer":
            continue
        key = _snake_case(kind)
        used[key] = used.get(key, -1) + 1
        stored = f"{key}_{used[key]}" if used[key] else key
        path = (*prefix, _text(layer.get("config", {}).get("name", "")))
        sub = group.get(f"layers/{stored}")
        if kind in MODEL_CLASSES:
            weights.update(_zip_weights(sub, layer, path) if sub is not None else {})
        else:
            weights[path] = _vars_under(sub) if sub is not None else []
    return weights


def _read_h5(path: Path) -> Keras2File:
    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
        if raw is None:
            raise ModelNotStreamable(
                f"{path.name} holds no model config (a weights-only file?); save the whole model"
            )
        config = json.loads(_text(raw))
        group = f.get("model_weights", f)
        version = _text(f.attrs.get("keras_version", "2"))
        return Keras2File(path, version, config, _h5_weights(group, config))


def _read_zip(path: Path) -> Keras2File:
    with zipfile.ZipFile(path) as archive:
        metadata = json.loads(archive.read("metadata.json"))
        config = json.loads(archive.read("config.json"))
        blob = archive.read("model.weights.h5")
    with h5py.File(io.BytesIO(blob), "r") as f:
        weights = _zip_weights(f, config)
    return Keras2File(path, str(metadata.get("keras_version")), config, weights)


def read_keras2_file(path: Path) -> Keras2File:
    try:
        return _read_h5(path) if path.suffix == ".h5" else _read_zip(path)
    except ModelNotStreamable:
        raise
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as exc:
        raise ModelNotStreamable(f"cannot read {path.name} as a Keras 2 file: {exc}") from exc
