"""Model loading, the streaming runner and session logic (TensorFlow loaded quietly first)."""

from service.core.quiet_import import import_tensorflow_quietly

import_tensorflow_quietly()
