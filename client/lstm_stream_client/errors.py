"""Typed errors mirroring the server's stable codes (`{"error": {"code", "message", ...}}`)."""

from typing import Any


class LstmStreamError(Exception):
    """Anything this client raises on purpose."""


class RetriesExhausted(LstmStreamError):
    """The retry budget ran out on transport errors, timeouts or 503s; nothing is known
    about the last attempt, so the chunk may or may not be applied: resend it with the same
    offset (a `Session` does that on its next call)."""

    def __init__(self, message: str, attempts: int, last: BaseException | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last = last


class ServerError(LstmStreamError):
    """An error answered by the server: its HTTP status, stable code, message and details."""

    code = "server_error"

    def __init__(self, status: int, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or {}

    def __str__(self) -> str:
        return f"{self.code} ({self.status}): {self.message}"


class ModelNotFound(ServerError):
    code = "model_not_found"


class SessionNotFound(ServerError):
    code = "session_not_found"


class SessionExists(ServerError):
    code = "session_exists"


class OffsetConflict(ServerError):
    """The chunk's offset is not the session's `steps`: the session is elsewhere than this
    client thought (another writer, a reset, a Redis crash that lost the last writes).
    Nothing was applied; `steps` says where the session is."""

    code = "offset_conflict"

    @property
    def steps(self) -> int:
        return int(self.details["steps"])

    @property
    def offset(self) -> int:
        return int(self.details["offset"])


class SessionBusy(ServerError):
    code = "session_busy"


class ModelVersionMismatch(ServerError):
    code = "model_version_mismatch"


class InvalidInput(ServerError):
    code = "invalid_input"


class PayloadTooLarge(ServerError):
    code = "payload_too_large"


class Unauthorized(ServerError):
    code = "unauthorized"


class TooManySessions(ServerError):
    code = "too_many_sessions"


class RateLimited(ServerError):
    code = "rate_limited"


class StoreUnavailable(ServerError):
    code = "store_unavailable"


_BY_CODE: dict[str, type[ServerError]] = {
    kind.code: kind
    for kind in (
        ModelNotFound,
        SessionNotFound,
        SessionExists,
        OffsetConflict,
        SessionBusy,
        ModelVersionMismatch,
        InvalidInput,
        PayloadTooLarge,
        Unauthorized,
        TooManySessions,
        RateLimited,
        StoreUnavailable,
    )
}


def error_from_body(status: int, body: Any) -> ServerError:
    """The typed error for an error body; a `ServerError` for codes this client predates."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        message = error if isinstance(error, str) else f"HTTP {status}"
        return ServerError(status, message)
    details = {key: value for key, value in error.items() if key not in ("code", "message")}
    code = str(error.get("code", ""))
    kind = _BY_CODE.get(code, ServerError)
    failure = kind(status, str(error.get("message", code)), details)
    if kind is ServerError and code:
        failure.code = code
    return failure
