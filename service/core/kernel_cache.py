"""Compiling the kernels once, ahead of the first request, into an on-disk cache.

The kernels are compiled for the exact argument types the runner passes (C-contiguous
float32 arrays), so no request ever waits for the compiler. numba keys a cache entry on
the kernel's own source file and the CPU, not on the modules it calls, so the cache
directory is further keyed on a digest of all the kernel sources: an edited `fmath.py`
never loads stale machine code.
"""

import hashlib
import logging
import threading
import time
from pathlib import Path

from numba import config, types

from service.core import activation_kernel, fmath, kernels, model_kernel, products

log = logging.getLogger(__name__)

_A1 = types.float32[::1]
_A2 = types.float32[:, ::1]
_A3 = types.float32[:, :, ::1]
_CODE, _FLAG, _SCALAR = types.int64, types.boolean, types.float32
_PROGRAM = types.int64[:, ::1]

SIGNATURES = {
    kernels.lstm: (_A3, _A2, _A2, _A2, _A1, _CODE, _CODE, _FLAG),
    kernels.gru: (_A3, _A2, _A2, _A2, _A2, _A1, _A1, _CODE, _CODE, _FLAG, _FLAG),
    kernels.simple_rnn: (_A3, _A2, _A2, _A2, _A1, _CODE, _FLAG),
    kernels.dense: (_A3, _A2, _A1, _CODE),
    kernels.pointwise: (_A3, _CODE),
    kernels.normalize: (_A3, _A1, _A1, _SCALAR, _A1, _A1, _FLAG, _FLAG),
    model_kernel.run_model: (_A3, _A2, _PROGRAM, _PROGRAM, _A1, _A1),
}

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "lstm-stream" / "kernels"

_lock = threading.Lock()
_compiled = False


def sources_digest() -> str:
    digest = hashlib.sha256()
    for module in (fmath, activation_kernel, products, kernels, model_kernel):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()[:16]


def compile_kernels(cache_dir: Path | None = DEFAULT_CACHE_DIR) -> float:
    """Compile (or load from `cache_dir`; None: compile in memory) every kernel; returns
    the seconds it took. Later calls return 0 at once: a process compiles them once."""
    global _compiled
    with _lock:
        if _compiled:
            return 0.0
        started = time.perf_counter()
        if cache_dir is not None:
            directory = Path(cache_dir) / sources_digest()
            try:
                directory.mkdir(parents=True, exist_ok=True)
                config.CACHE_DIR = str(directory)
                for dispatcher in SIGNATURES:
                    dispatcher.enable_caching()
            except (OSError, RuntimeError) as exc:
                log.warning("kernel cache %s unusable, compiling in memory: %s", directory, exc)
        for dispatcher, signature in SIGNATURES.items():
            dispatcher.compile(signature)
        _compiled = True
        return time.perf_counter() - started
