"""Per-key request rate: a token bucket per API key (namespace), in this process."""

import math
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.auth import is_protected
from service.api.errors import send_error
from service.errors import RateLimited

# Buckets of keys idle this long are full again: forgetting them changes nothing.
_SWEEP_EVERY = 1024


class KeyRateLimit:
    """429 `rate_limited` with `Retry-After` for a key sending faster than `per_second`
    (after a burst of `burst`), on `/v1` and `/v2`; runs after the auth middleware."""

    def __init__(
        self,
        app: ASGIApp,
        per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.per_second = per_second
        self.burst = float(burst or max(1, math.ceil(per_second)))
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)
        self._calls = 0

    def _take(self, namespace: str) -> float:
        """0 when a token was taken; otherwise the seconds until one is there."""
        now = self._clock()
        tokens, then = self._buckets.get(namespace, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.per_second)
        if tokens < 1:
            self._buckets[namespace] = (tokens, now)
            return (1 - tokens) / self.per_second
        self._buckets[namespace] = (tokens - 1, now)
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            full = now - self.burst / self.per_second
            self._buckets = {k: v for k, v in self._buckets.items() if v[1] > full}
        return 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        namespace = scope.get("state", {}).get("namespace", "_")
        wait = self._take(namespace)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            await send_error(scope, send, RateLimited.request_rate(self.per_second, retry_after))
            return
        await self.app(scope, receive, send)
