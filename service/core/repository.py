"""The model repository: files on disk become the versions served, reloaded without a restart.

Layout, as Triton's: `<dir>/<name>/<version>/model.keras` (or `model.h5`) with integer
versions, beside flat `<dir>/<name>.keras` (or `.h5`) files, which are version 1.
"""

import dataclasses
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.core.models import RefusedModel, ServedModel, load_model
from service.core.probe import PROBE_TOLERANCE
from service.errors import ModelNotFound, ModelNotStreamable

log = logging.getLogger(__name__)

MODEL_FILES = ("model.keras", "model.h5")
FLAT_SUFFIXES = (".keras", ".h5")
_POLICY = re.compile(r"^(all|latest(:[1-9][0-9]*)?)$")

Key = tuple[str, int]  # (model name, version number)
Stamp = tuple[int, int]  # (mtime_ns, size): a file replaced in place is loaded again


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model are served: the `latest` N that load, or all (None)."""

    latest: int | None = None

    @classmethod
    def parse(cls, text: str) -> "VersionPolicy":
        if not _POLICY.match(text):
            raise ValueError(f"version policy {text!r} is not 'all', 'latest' or 'latest:N'")
        if text == "all":
            return cls(None)
        return cls(int(text.split(":", 1)[1]) if ":" in text else 1)


def scan(directory: Path) -> dict[str, dict[int, Path]]:
    """Every model file in the repository, by model name and version number."""
    found: dict[str, dict[int, Path]] = {}
    if not directory.is_dir():
        return found
    for entry in sorted(directory.iterdir()):
        if entry.is_file() and entry.suffix in FLAT_SUFFIXES:
            found.setdefault(entry.stem, {}).setdefault(1, entry)
        elif entry.is_dir():
            for version in entry.iterdir():
                if not (version.is_dir() and version.name.isdigit() and int(version.name) > 0):
                    continue
                files = [version / name for name in MODEL_FILES if (version / name).is_file()]
                if files:
                    # A versioned directory wins over a flat file of the same name.
                    found.setdefault(entry.name, {})[int(version.name)] = files[0]
    return found


def _stamp(path: Path) -> Stamp | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


class ModelRegistry:
    """The versions this process serves, by model name, and the files it refused.

    Readers see one immutable snapshot; `refresh` builds the next one (slow: every new
    file is loaded and probed) and swaps it in, so requests never wait for a reload and
    a version whose file did not change keeps its runner object, bit for bit."""

    def __init__(
        self,
        directory: Path | None = None,
        policy: VersionPolicy = VersionPolicy(),
        probe_steps: int = 64,
        tolerance: float = PROBE_TOLERANCE,
        on_change: Callable[["ModelRegistry"], None] | None = None,
    ) -> None:
        self.directory = directory
        self.policy = policy
        self._probe = (probe_steps, tolerance)
        self._on_change = on_change
        self._served: dict[str, dict[int, ServedModel]] = {}
        self._refused: dict[Key, RefusedModel] = {}
        self._stamps: dict[Key, Stamp | None] = {}
        self._failed: dict[Key, tuple[Stamp | None, RefusedModel]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_directory(
        cls,
        directory: Path,
        probe_steps: int = 64,
        tolerance: float = PROBE_TOLERANCE,
        policy: VersionPolicy = VersionPolicy(),
        on_change: Callable[["ModelRegistry"], None] | None = None,
    ) -> "ModelRegistry":
        registry = cls(Path(directory), policy, probe_steps, tolerance, on_change)
        registry.refresh()
        return registry

    def refresh(self, name: str | None = None) -> None:
        """Load new and changed versions, drop removed ones (all models, or one)."""
        if self.directory is None:
            return
        with self._lock:
            found = scan(self.directory)
            names = [name] if name is not None else sorted(set(found) | set(self._served))
            served = dict(self._served)
            refused = {key: r for key, r in self._refused.items() if key[0] not in names}
            for model_name in names:
                kept = self._refresh_model(model_name, found.get(model_name, {}), refused)
                if kept:
                    served[model_name] = kept
                else:
                    served.pop(model_name, None)
            changed = served != self._served
            self._served, self._refused = served, refused
        if changed and self._on_change is not None:
            self._on_change(self)

    def _refresh_model(
        self, name: str, files: dict[int, Path], refused: dict[Key, RefusedModel]
    ) -> dict[int, ServedModel]:
        current = self._served.get(name, {})
        kept: dict[int, ServedModel] = {}
        for number in sorted(files, reverse=True):
            if self.policy.latest is not None and len(kept) >= self.policy.latest:
                break
            key, path = (name, number), files[number]
            stamp = _stamp(path)
            old = current.get(number)
            if old is not None and old.path == path and self._stamps.get(key) == stamp:
                kept[number] = old
                continue
            model = self._load(key, path, stamp, refused)
            if model is not None:
                kept[number] = model
            elif old is not None:
                kept[number] = old  # a broken replacement never takes down a served version
        return dict(sorted(kept.items()))

    def _load(
        self, key: Key, path: Path, stamp: Stamp | None, refused: dict[Key, RefusedModel]
    ) -> ServedModel | None:
        failed = self._failed.get(key)
        if failed is not None and failed[0] == stamp and failed[1].path == path:
            refused[key] = failed[1]  # unchanged since it was refused: not probed again
            return None
        name, number = key
        try:
            model = load_model(path, *self._probe)
        except ModelNotStreamable as exc:
            log.error("refusing model %s version %d (%s): %s", name, number, path, exc)
            refused[key] = RefusedModel(name, path, str(exc), number)
            self._failed[key] = (stamp, refused[key])
            return None
        self._failed.pop(key, None)
        self._stamps[key] = stamp
        log.info(
            "serving model %s version %d (%s; probe error %.2g against %s)",
            name,
            number,
            model.version,
            model.probe_max_error,
            model.probe_reference,
        )
        return dataclasses.replace(model, name=name, number=number)

    def get(self, name: str, version: int | str | None = None) -> ServedModel:
        """The latest version, or the one named by its number or its fingerprint."""
        versions = self._served.get(name)
        if not versions:
            refused = "; ".join(
                f"version {r.number}: {r.reason}" for r in self.refused_versions(name)
            )
            raise ModelNotFound(name, refused=refused)
        if version is None:
            return versions[max(versions)]
        text = str(version)
        for model in versions.values():
            if (text.isdigit() and model.number == int(text)) or model.version == text:
                return model
        raise ModelNotFound(name, text, served=list(versions))

    def find(self, name: str, fingerprint: str) -> ServedModel | None:
        """The served version of `name` a session pinned to `fingerprint` runs on."""
        for model in self._served.get(name, {}).values():
            if model.version == fingerprint:
                return model
        return None

    def versions(self, name: str) -> list[ServedModel]:
        return list(self._served.get(name, {}).values())

    def all(self) -> list[ServedModel]:
        """The latest version of every model."""
        return [self._served[name][max(self._served[name])] for name in sorted(self._served)]

    def loaded(self) -> list[ServedModel]:
        """Every served version of every model."""
        return [model for name in sorted(self._served) for model in self._served[name].values()]

    @property
    def refused(self) -> list[RefusedModel]:
        return [self._refused[key] for key in sorted(self._refused)]

    def refused_versions(self, name: str) -> list[RefusedModel]:
        return [r for r in self.refused if r.name == name]
