"""When to resend, and how long to wait: shared by the sync, async and WebSocket paths."""

import random
import time
from dataclasses import dataclass

import httpx

# Answers that say "not now" without applying anything: the same request may be resent.
RETRYABLE_STATUSES = frozenset({502, 503, 504})
RETRYABLE_CODES = frozenset({"store_unavailable", "session_busy", "rate_limited"})
# Transport failures after which a resend is safe because every chunk carries its offset.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Full-jitter exponential backoff, bounded by a number of attempts and a time budget."""

    attempts: int = 10
    base_seconds: float = 0.05
    cap_seconds: float = 2.0
    budget_seconds: float = 60.0

    def backoff(self) -> "Backoff":
        return Backoff(self)


class Backoff:
    """The delays of one request's retries; `next_delay` is None once the budget is spent."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.attempt = 0
        self.deadline = time.monotonic() + policy.budget_seconds

    def next_delay(self, retry_after: float | None = None) -> float | None:
        self.attempt += 1
        if self.attempt >= self.policy.attempts:
            return None
        window = min(self.policy.cap_seconds, self.policy.base_seconds * 2 ** (self.attempt - 1))
        delay = random.uniform(0, window)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.policy.cap_seconds * 5))
        if time.monotonic() + delay > self.deadline:
            return None
        return delay


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def is_retryable(response: httpx.Response) -> bool:
    if response.status_code in RETRYABLE_STATUSES:
        return True
    if response.status_code in (409, 429):
        try:
            code = response.json().get("error", {}).get("code")
        except (ValueError, AttributeError):
            return False
        return code in RETRYABLE_CODES
    return False
