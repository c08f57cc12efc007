"""HEAD on every GET route: answered as the GET, without the body (RFC 9110, 9.3.2).

FastAPI routes list only the methods they declare, so a HEAD used to be 405 while the
`Allow` header named HEAD. Done here rather than by adding HEAD to each route, which would
double every GET operation in the OpenAPI document."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})  # shared with the copy: errors noted inside are seen

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)
