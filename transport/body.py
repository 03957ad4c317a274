"""The request body limit: 413 before the body is parsed, however it is sent."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schema.limits import too_complex
from transport.responses import Refusal, media_type_of

BODY_TOO_LARGE = "The request body has {actual} bytes; the limit is {limit}."


class BodyTooLarge(Exception):
    def __init__(self, received: int) -> None:
        super().__init__(received)
        self.received = received


class BodyLimit:
    """Refuses a body over `max_bytes`: at once when Content-Length says so, else as it streams.

    A streamed body is refused as soon as the bytes received pass the limit, so `actual` is
    what had arrived by then, not the full size.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self.refusal(int(declared)).response(media_type_of(headers))(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(received)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge as exc:
            if started:
                raise
            response = self.refusal(exc.received).response(media_type_of(headers))
            await response(scope, receive, send)

    def refusal(self, actual: int) -> Refusal:
        error = too_complex(BODY_TOO_LARGE, limit=self.max_bytes, actual=actual)
        return Refusal(413, error.message, **error.extensions)
