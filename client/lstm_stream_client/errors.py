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
    default_status = 500

    def __init__(self, status: int, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or {}

    def __str__(self) -> str:
        return f"{self.code} ({self.status}): {self.message}"


class ModelNotFound(ServerError):
    code, default_status = "model_not_found", 404


class SessionNotFound(ServerError):
    code, default_status = "session_not_found", 404


class SessionExists(ServerError):
    code, default_status = "session_exists", 409


class OffsetConflict(ServerError):
    """The chunk's offset is not the session's `steps`: the session is elsewhere than this
    client thought (another writer, a reset, a Redis crash that lost the last writes).
    Nothing was applied; `steps` says where the session is."""

    code, default_status = "offset_conflict", 409

    @property
    def steps(self) -> int:
        return int(self.details["steps"])

    @property
    def offset(self) -> int:
        return int(self.details["offset"])


class SessionBusy(ServerError):
    code, default_status = "session_busy", 409


class ModelVersionMismatch(ServerError):
    code, default_status = "model_version_mismatch", 409


class InvalidInput(ServerError):
    code, default_status = "invalid_input", 422


class PayloadTooLarge(ServerError):
    code, default_status = "payload_too_large", 413


class Unauthorized(ServerError):
    code, default_status = "unauthorized", 401


class TooManySessions(ServerError):
    code, default_status = "too_many_sessions", 429


class RateLimited(ServerError):
    code, default_status = "rate_limited", 429


class StoreUnavailable(ServerError):
    code, default_status = "store_unavailable", 503


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


def error_from_body(status: int | None, body: Any) -> ServerError:
    """The typed error for an error body; a `ServerError` for codes this client predates.
    Without a status (a WebSocket message), the code's usual HTTP status."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        message = error if isinstance(error, str) else f"HTTP {status}"
        return ServerError(status or ServerError.default_status, message)
    details = {key: value for key, value in error.items() if key not in ("code", "message")}
    code = str(error.get("code", ""))
    kind = _BY_CODE.get(code, ServerError)
    failure = kind(status or kind.default_status, str(error.get("message", code)), details)
    if kind is ServerError and code:
        failure.code = code
    return failure
