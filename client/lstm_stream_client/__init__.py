"""Client for lstm-stream: stream sequences to Keras recurrent models, each chunk exactly once.

from lstm_stream_client import Client
with Client("http://127.0.0.1:8000") as client:
    session = client.create_session("sensor-lstm")
    for y in session.stream(x, chunk_steps=50):
        ...
"""

from lstm_stream_client.aio import AsyncClient, AsyncSession
from lstm_stream_client.client import Client, Session
from lstm_stream_client.errors import (
    InvalidInput,
    LstmStreamError,
    ModelNotFound,
    ModelVersionMismatch,
    OffsetConflict,
    PayloadTooLarge,
    RateLimited,
    RetriesExhausted,
    ServerError,
    SessionBusy,
    SessionExists,
    SessionNotFound,
    StoreUnavailable,
    TooManySessions,
    Unauthorized,
)
from lstm_stream_client.retry import RetryPolicy
from lstm_stream_client.wire import ChunkAnswer, ModelInfo, SessionInfo

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncSession",
    "ChunkAnswer",
    "Client",
    "InvalidInput",
    "LstmStreamError",
    "ModelInfo",
    "ModelNotFound",
    "ModelVersionMismatch",
    "OffsetConflict",
    "PayloadTooLarge",
    "RateLimited",
    "RetriesExhausted",
    "RetryPolicy",
    "ServerError",
    "Session",
    "SessionBusy",
    "SessionExists",
    "SessionInfo",
    "SessionNotFound",
    "StoreUnavailable",
    "TooManySessions",
    "Unauthorized",
]
