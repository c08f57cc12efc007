import os
import sys


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras with stderr silenced, unless `TF_CPP_MIN_LOG_LEVEL` is
    below 3 (`service/__init__.py` sets 3 by default).

    TensorFlow's C++ libraries log through absl before any level applies (oneDNN and CUDA
    notices, once per library), so no variable hides them; an import error still raises
    once stderr is back."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "3":
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
