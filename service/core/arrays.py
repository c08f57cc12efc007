"""The data plane's arrays: float32 throughout, from the transport to the state bytes."""

from typing import Any

import numpy as np

F32 = np.float32
Floats = np.ndarray[Any, Any]  # float32
