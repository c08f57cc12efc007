"""Request body size limit, enforced before the body is parsed."""

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import send_error
from service.errors import PayloadTooLarge


class BodySizeLimit:
    """413 `payload_too_large` for bodies over `max_bytes`, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(scope, send, PayloadTooLarge(self.max_bytes))
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes through FastAPI's body reading unchanged
                    # and reaches the error handler, which names it payload_too_large.
                    too_large = PayloadTooLarge(self.max_bytes)
                    raise HTTPException(too_large.status, too_large.message)
            return message

        await self.app(scope, limited_receive, send)
