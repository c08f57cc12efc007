"""The model repository: layout, version policy, and reloads that keep what did not change."""

import os
from pathlib import Path

import keras
import numpy as np
import pytest

from service.core.repository import ModelRegistry, VersionPolicy, scan
from service.errors import ModelNotFound


def lstm(seed: int) -> keras.Model:
    model = keras.Sequential(
        [keras.Input((None, 2)), keras.layers.LSTM(3, return_sequences=True), keras.layers.Dense(1)]
    )
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def put(root: Path, name: str, version: int, seed: int) -> Path:
    path = root / name / str(version) / "model.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    lstm(seed).save(path)
    return path


def put_broken(root: Path, name: str, version: int) -> Path:
    path = root / name / str(version) / "model.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a zip file")
    return path


def test_layout_versioned_directories_beside_flat_files(tmp_path):
    put(tmp_path, "m", 1, seed=1)
    put(tmp_path, "m", 10, seed=2)
    lstm(3).save(tmp_path / "flat.keras")
    (tmp_path / "m" / "notes").mkdir()  # not a version: ignored
    (tmp_path / "m" / "0").mkdir()  # versions start at 1
    found = scan(tmp_path)
    assert {name: sorted(versions) for name, versions in found.items()} == {
        "flat": [1],
        "m": [1, 10],
    }


@pytest.mark.parametrize(
    ("text", "latest"), [("all", None), ("latest", 1), ("latest:3", 3)], ids=str
)
def test_version_policy_settings(text, latest):
    assert VersionPolicy.parse(text).latest == latest


def test_policy_latest_n_skips_a_broken_newest_version(tmp_path):
    put(tmp_path, "m", 1, seed=1)
    put(tmp_path, "m", 2, seed=2)
    put_broken(tmp_path, "m", 3)
    registry = ModelRegistry.from_directory(tmp_path, policy=VersionPolicy(latest=1))
    assert [v.number for v in registry.versions("m")] == [2]
    assert [(r.number, "cannot load" in r.reason) for r in registry.refused] == [(3, True)]
    with pytest.raises(ModelNotFound, match="no version '1'"):
        registry.get("m", 1)


def test_a_reload_keeps_unchanged_versions_and_drops_removed_ones(tmp_path):
    first = put(tmp_path, "m", 1, seed=1)
    registry = ModelRegistry.from_directory(tmp_path)
    kept = registry.get("m", 1)

    put(tmp_path, "m", 2, seed=2)
    put_broken(tmp_path, "m", 3)
    registry.refresh()

    # The very same runner serves version 1: sessions on it stream on, bit for bit.
    assert registry.get("m", 1) is kept
    assert registry.get("m").number == 2
    assert registry.get("m", kept.version) is kept  # by fingerprint too
    assert [r.number for r in registry.refused_versions("m")] == [3]

    os.remove(first)
    registry.refresh("m")
    assert [v.number for v in registry.versions("m")] == [2]
    assert registry.find("m", kept.version) is None


def test_a_model_with_no_loadable_version_says_why(tmp_path):
    put_broken(tmp_path, "m", 1)
    registry = ModelRegistry.from_directory(tmp_path)
    with pytest.raises(ModelNotFound, match=r"no model named 'm' is served \(refused: version 1"):
        registry.get("m")


def test_a_broken_replacement_leaves_the_served_version(tmp_path):
    path = put(tmp_path, "m", 1, seed=1)
    registry = ModelRegistry.from_directory(tmp_path)
    served = registry.get("m")
    path.write_bytes(b"half-written")
    registry.refresh()
    assert registry.get("m") is served
    assert [r.number for r in registry.refused] == [1]
