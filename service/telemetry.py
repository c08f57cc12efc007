"""What the core and the store report as they work, without knowing who listens.

`service/metrics.py` implements it for Prometheus; `NullTelemetry` is the default.
Calls happen on the hot path (and `model_ran` from worker threads): implementations must
be cheap and thread-safe.
"""

from typing import Protocol


class Telemetry(Protocol):
    def model_ran(self, model: str, steps: int, seconds: float) -> None:
        """`steps` timesteps went through `model`'s runner in `seconds`."""
        ...

    def store_call(self, operation: str, seconds: float) -> None:
        """One call to the state store (a Redis round trip) took `seconds`."""
        ...

    def session_event(self, event: str) -> None:
        """A session was `created`, `reset` or `deleted`."""
        ...


class NullTelemetry:
    def model_ran(self, model: str, steps: int, seconds: float) -> None:
        pass

    def store_call(self, operation: str, seconds: float) -> None:
        pass

    def session_event(self, event: str) -> None:
        pass


NULL_TELEMETRY = NullTelemetry()
