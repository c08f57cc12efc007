"""lstm-stream: streaming inference for Keras recurrent models, state in Redis."""

import os

# Set before numpy or TensorFlow load: one BLAS thread per process keeps the
# row-wise kernels deterministic and leaves the cores to the event loops, and
# TensorFlow's C++ chatter (device probing at level ERROR on a CPU-only host) is noise
# in a server's log: its real failures raise in Python. Set it to 0 to see everything.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
