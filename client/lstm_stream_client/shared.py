"""What the sync and async clients share beyond the wire: settings, caches, checks."""

import secrets
from dataclasses import dataclass, field
from typing import Any

from lstm_stream_client import wire
from lstm_stream_client.errors import LstmStreamError
from lstm_stream_client.retry import RetryPolicy
from lstm_stream_client.wire import ChunkAnswer, HttpCall, ModelInfo, SessionInfo


@dataclass
class ClientConfig:
    url: str
    api_key: str | None
    retry: RetryPolicy
    binary: bool | None
    models: dict[str, ModelInfo] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def create_call(
        self, model: str, session_id: str | None, ttl_seconds: int | None
    ) -> tuple[str, HttpCall]:
        sid = session_id or secrets.token_urlsafe(18)
        payload: dict[str, Any] = {"session_id": sid}
        if ttl_seconds is not None:
            payload["ttl_seconds"] = ttl_seconds
        return sid, wire.json_call("POST", f"/v1/models/{model}/sessions", payload)


def adopt_after_resend(info: SessionInfo, model: str) -> None:
    """A create resent after a lost answer finds the session it made: untouched, same model."""
    if info.model != model or info.steps != 0:
        raise LstmStreamError(
            f"session '{info.session_id}' exists with model {info.model!r} at step "
            f"{info.steps}: not the one this client just created"
        )


def checked_offset(answer: ChunkAnswer, offset: int) -> ChunkAnswer:
    if answer.offset != offset:
        raise LstmStreamError(f"sent the chunk at offset {offset}, answered at {answer.offset}")
    return answer
