"""lstm-stream: streaming inference for Keras recurrent models, state in Redis."""

import os

# Set before numpy or TensorFlow load: one BLAS thread per process keeps the
# row-wise kernels deterministic and leaves the cores to the event loops, and
# TensorFlow's start-up chatter is noise in a server's log.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
