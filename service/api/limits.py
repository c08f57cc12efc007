"""Request bodies judged before they are read or parsed: their size, and for large ones the
bytes and heavy work their key (and the process) already has in progress."""

import contextlib

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import send_error
from service.core.fairness import LARGE_BODY_BYTES, BodyBytes, HeavyWork
from service.errors import PayloadTooLarge, RateLimited, ServiceError


def _as_http(error: ServiceError) -> HTTPException:
    # An HTTPException passes through FastAPI's body reading unchanged (anything else
    # becomes a 400) and reaches the error handler, which names it by its status.
    return HTTPException(error.status, error.message, error.headers or None)


class BodyAdmission:
    """413 `payload_too_large` for bodies over `max_bytes`, declared or streamed. A body over
    `LARGE_BODY_BYTES` (declared in Content-Length, else once that much has arrived) must
    also fit in `budget` (its key's and the process's bytes of large bodies being read and
    parsed) and makes its request heavy work from then on (`HeavyWork.held`): past either
    bound, 429 `rate_limited` with `Retry-After`, before the rest is read. Its bytes and
    its share of heavy work are given back when the request is answered."""

    def __init__(self, app: ASGIApp, max_bytes: int, budget: BodyBytes) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"content-length")
        declared = int(header) if header is not None and header.isdigit() else None
        if declared is not None and declared > self.max_bytes:
            await send_error(scope, send, PayloadTooLarge(self.max_bytes))
            return
        namespace = scope.get("state", {}).get("namespace", "_")
        taken = 0
        received = 0

        with contextlib.ExitStack() as admitted:

            def admit(size: int) -> None:
                """Count `size` more bytes of this large body; the first time, hold heavy work."""
                nonlocal taken
                self.budget.take(namespace, size)
                first = not taken
                taken += size
                if first:
                    heavy: HeavyWork = scope["app"].state.sessions.heavy
                    admitted.enter_context(heavy.held(namespace))

            async def admitted_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] != "http.request":
                    return message
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _as_http(PayloadTooLarge(self.max_bytes))
                if received > max(taken, LARGE_BODY_BYTES):  # more than declared, or chunked
                    try:
                        admit(received - taken)
                    except RateLimited as refused:
                        raise _as_http(refused) from None
                return message

            try:
                if declared is not None and declared > LARGE_BODY_BYTES:
                    try:
                        admit(declared)
                    except RateLimited as refused:
                        await send_error(scope, send, refused)
                        return
                await self.app(scope, admitted_receive, send)
            finally:
                if taken:
                    self.budget.give_back(namespace, taken)
