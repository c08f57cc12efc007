from typing import Any


class ServiceError(Exception):
    """A failure the client can act on: an HTTP status and a stable code."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def headers(self) -> dict[str, str]:
        return {}


class ModelNotFound(ServiceError):
    status, code = 404, "model_not_found"


class SessionNotFound(ServiceError):
    status, code = 404, "session_not_found"


class SessionExists(ServiceError):
    status, code = 409, "session_exists"


class OffsetConflict(ServiceError):
    status, code = 409, "offset_conflict"


class SessionBusy(ServiceError):
    status, code = 409, "session_busy"


class ModelVersionMismatch(ServiceError):
    status, code = 409, "model_version_mismatch"


class InvalidInput(ServiceError):
    status, code = 422, "invalid_input"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class TooManySessions(ServiceError):
    status, code = 429, "too_many_sessions"


class StoreUnavailable(ServiceError):
    status, code = 503, "store_unavailable"
    retry_after_seconds = 1

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class CorruptState(ServiceError):
    status, code = 500, "corrupt_state"


class ModelNotStreamable(Exception):
    """A model file that cannot be served as a stream; the message names the layer."""
