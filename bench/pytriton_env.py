"""The PyTriton peer's own virtualenv and weights, made once and kept in a cache folder
(`LSTM_BENCH_CACHE`, default ~/.cache/lstm-stream-bench) so later runs start at once.

PyTriton pins its own numpy and protobuf, which must not touch the service's environment;
its wheel bundles a `tritonserver` that runs without a GPU.
"""

import hashlib
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

from bench.systems import REPO, System

PYTRITON = "nvidia-pytriton==0.7.0"
MODEL_PATH = REPO / "service" / "demo_models" / "sensor-lstm.keras"


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "lstm-stream-bench"
    return Path(os.environ.get("LSTM_BENCH_CACHE", default))


def _venv_python() -> Path:
    folder = cache_dir() / ("venv-" + PYTRITON.replace("==", "-"))
    python = folder / "bin" / "python"
    marker = folder / "installed"
    if not marker.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(folder)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", PYTRITON],
            check=True,
            capture_output=True,
            text=True,
        )
        marker.write_text(PYTRITON + "\n")
    return python


def _weights() -> Path:
    digest = hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest()[:16]
    target = cache_dir() / f"sensor-lstm-{digest}.npz"
    if not target.exists():
        subprocess.run(
            [sys.executable, "-m", "bench.pytriton_peer", "export", str(target),
             "--model-path", str(MODEL_PATH)],
            cwd=REPO, check=True, capture_output=True, text=True,
        )  # fmt: skip
    return target


def pytriton_system() -> System:
    """The peer as a `System`; builds the venv and exports the weights on first use."""
    python = _venv_python()
    # Triton's Python backend loads libpython by name: point it at this interpreter's.
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    library_path = os.pathsep.join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))
    return System(
        name="pytriton",
        argv=(str(python), "-m", "bench.pytriton_peer", "serve", str(_weights())),
        env={"LD_LIBRARY_PATH": library_path},
        label="PyTriton 0.7.0 (numpy model, state in memory, no Redis)",
        ready_path="/v2/models/sensor-lstm/ready",
        protocol="v2",
        whole_tree=True,
    )
