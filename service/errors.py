"""Domain errors: each carries its HTTP status and stable code, and formats its own message
from its arguments, so raise sites and the documentation's examples agree."""

from collections.abc import Sequence
from typing import Any, Self

# Ids and names a client sent are echoed at most this long, in answers and in logs.
SHOWN_ID_CHARS = 128


def clip(text: str, limit: int = SHOWN_ID_CHARS) -> str:
    """`text` as an error or a log line shows it: cut, with how long it was, past `limit`."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} characters)"


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

    @classmethod
    def example(cls) -> Self:
        """An instance as the documentation shows it."""
        return cls("internal server error")


class ModelNotFound(ServiceError):
    status, code = 404, "model_not_found"

    def __init__(
        self, name: str, version: str | None = None, served: Sequence[int] = (), refused: str = ""
    ) -> None:
        name = clip(name)
        if version is None:
            reason = f" (refused: {refused})" if refused else ""
            super().__init__(f"no model named '{name}' is served{reason}", model=name)
        else:
            numbers = ", ".join(str(number) for number in served)
            super().__init__(
                f"model '{name}' has no version '{clip(version)}'; it serves versions {numbers}",
                model=name,
                version=clip(version),
            )

    @classmethod
    def example(cls) -> Self:
        return cls("nope")


class SessionNotFound(ServiceError):
    status, code = 404, "session_not_found"

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"session '{session_id}' does not exist or has expired", session_id=session_id
        )

    @classmethod
    def example(cls) -> Self:
        return cls("abc")


class SequenceNotFound(SessionNotFound):
    def __init__(self, name: str, sequence_id: int | str) -> None:
        ServiceError.__init__(
            self,
            f"{name} was never started or has expired; send sequence_start=true to start it",
            sequence_id=sequence_id,
        )


class SessionExists(ServiceError):
    status, code = 409, "session_exists"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session '{session_id}' already exists", session_id=session_id)

    @classmethod
    def example(cls) -> Self:
        return cls("abc")


class OffsetConflict(ServiceError):
    status, code = 409, "offset_conflict"

    def __init__(self, offset: int, steps: int, session: str = "") -> None:
        name = session or "the session"
        super().__init__(
            f"chunk offset {offset} does not match {name}, which is at step {steps}",
            steps=steps,
            offset=offset,
        )

    @classmethod
    def for_session(cls, offset: int, steps: int, session_id: str) -> Self:
        return cls(offset, steps, f"session '{session_id}'")

    @classmethod
    def example(cls) -> Self:
        return cls.for_session(2, 4, "abc")


class SequenceOffsetConflict(OffsetConflict):
    def __init__(self, offset: int | None, steps: int, name: str) -> None:
        ServiceError.__init__(
            self,
            f"sequence_offset {offset} does not match {name}, which is at step {steps}",
            steps=steps,
            offset=offset,
        )


class SessionBusy(ServiceError):
    status, code = 409, "session_busy"

    def __init__(self, name: str, **details: Any) -> None:
        super().__init__(f"{name} is being written by other requests; retry", **details)

    @classmethod
    def for_session(cls, session_id: str) -> Self:
        return cls(f"session '{session_id}'", session_id=session_id)

    @classmethod
    def example(cls) -> Self:
        return cls.for_session("abc")


class ModelVersionMismatch(ServiceError):
    status, code = 409, "model_version_mismatch"

    def __init__(
        self, session_id: str, model: str, session_version: str, served_version: str
    ) -> None:
        super().__init__(
            f"session '{session_id}' was started on version {session_version} of '{model}', "
            f"which is no longer served (the latest is {served_version}); reset the session "
            "to continue on the latest version",
            session_version=session_version,
            served_version=served_version,
        )

    @classmethod
    def example(cls) -> Self:
        return cls("abc", "seed-lstm", "1f140261b48b4a70", "9bfb46ea3c6aa186")


class SequenceVersionMismatch(ModelVersionMismatch):
    def __init__(self, name: str, **details: Any) -> None:
        ServiceError.__init__(
            self,
            f"{name} was started on another version of the model; send "
            "sequence_start=true to restart it on the served version",
            **details,
        )


class InvalidInput(ServiceError):
    """Free-form: what is wrong with the input varies too much for one template."""

    status, code = 422, "invalid_input"

    @classmethod
    def example(cls) -> Self:
        return cls(
            "inputs have shape [1, 3]; model 'seed-lstm' takes [timesteps, features] "
            "with 2 features",
            expected_features=2,
        )


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"

    def __init__(self, max_bytes: int, when: str = "") -> None:
        super().__init__(f"request body exceeds {max_bytes} bytes{when}", max_bytes=max_bytes)

    @classmethod
    def example(cls) -> Self:
        return cls(16_777_216)


class TensorsTooLarge(PayloadTooLarge):
    def __init__(self, batch: int, steps: int, needed: int, limit: int) -> None:
        ServiceError.__init__(
            self,
            f"{batch} x {steps} timesteps would take {needed} bytes of tensors (inputs, "
            f"outputs and states as float32); the limit is {limit}",
            max_tensor_bytes=limit,
        )


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"

    def __init__(self, admin: bool = False) -> None:
        if admin:
            super().__init__("reloading models needs an admin key (LSTM_ADMIN_API_KEYS)")
        else:
            super().__init__("missing or unknown API key: send Authorization: Bearer <key>")

    @classmethod
    def example(cls) -> Self:
        return cls()


class Forbidden(ServiceError):
    status, code = 403, "forbidden"

    def __init__(self) -> None:
        super().__init__(
            "reloading models needs an admin key (LSTM_ADMIN_API_KEYS), not an API key"
        )

    @classmethod
    def example(cls) -> Self:
        return cls()


class TooManySessions(ServiceError):
    status, code = 429, "too_many_sessions"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this API key already holds {limit} live sessions; delete some or let them "
            "expire before creating more",
            limit=limit,
        )

    @classmethod
    def example(cls) -> Self:
        return cls(10_000)


class RateLimited(ServiceError):
    status, code = 429, "rate_limited"

    def __init__(self, reason: str, retry_after_seconds: int = 1, **details: Any) -> None:
        super().__init__(
            f"{reason}; retry in {retry_after_seconds} s",
            retry_after_seconds=retry_after_seconds,
            **details,
        )
        self.retry_after_seconds = retry_after_seconds

    @classmethod
    def heavy_work(cls, limit: int, steps: int, whole_server: bool = False) -> Self:
        holder = "the server" if whole_server else "this API key"
        return cls(
            f"{holder} already has {limit} requests of more than {steps} timesteps in progress",
            limit=limit,
        )

    @classmethod
    def body_bytes(cls, limit: int, large: int, whole_server: bool = False) -> Self:
        holder = "the server" if whole_server else "this API key"
        return cls(
            f"{holder} would have more than {limit} bytes of request bodies over {large} "
            "bytes being read at once",
            limit_bytes=limit,
        )

    @classmethod
    def request_rate(cls, per_second: float, retry_after_seconds: int) -> Self:
        return cls(
            f"this API key sends more than {per_second:g} requests per second",
            retry_after_seconds,
            limit_per_second=per_second,
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}

    @classmethod
    def example(cls) -> Self:
        return cls.heavy_work(2, 32)


class StoreUnavailable(ServiceError):
    status, code = 503, "store_unavailable"
    retry_after_seconds = 1

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}

    @classmethod
    def example(cls) -> Self:
        return cls("the session store is unreachable: Timeout reading from socket")


class CorruptState(ServiceError):
    status, code = 500, "corrupt_state"


class ModelNotStreamable(Exception):
    """A model file that cannot be served as a stream; the message names the layer."""
