"""uvicorn's WebSocket protocol with per-message compression that holds no memory when idle.

A chat server keeps its sockets open for hours, mostly idle, so what one idle socket holds is
what bounds the sockets a process can carry (issue 17). tracemalloc on 300 idle, logged-in
`graphql-transport-ws` sockets (bench/README.md, "Memory per connection") found about 86 KiB
each, of which about 50 KiB was permessage-deflate's zlib state: uvicorn (0.54) negotiates
context takeover, so every socket keeps a compressor (~38 KiB with its window of 2^12 and
memLevel 5) and a decompressor (~11 KiB) for its whole life.

Here both directions negotiate `no_context_takeover` (RFC 7692, section 7.1.1): each message
is compressed on its own, and the websockets library then makes the zlib object for a message
and drops it after (`PerMessageDeflate.encode`/`decode`). Idle sockets hold no zlib state at
all. The price: a message no longer borrows words from the ones before it, which for chatql's
small JSON events costs some ratio (the keys repeat within one event too); clients that do
not offer compression are unaffected. Window bits and memLevel stay uvicorn's.

It also refuses an upgrade past `CHATQL_MAX_CONNECTIONS` (uvicorn's `limit_concurrency`) with
`503 Service Unavailable`, as uvicorn answers an HTTP request past it: uvicorn skips that check
for an upgrade, so WebSockets, the connections that stay, were never bounded.

What else an idle socket held for nothing (tracemalloc, bench/connection_memory.py), and is
dropped or made lazily here:

- the handshake: websockets' `Request` (its `Headers`, ~4 KiB with a browser's headers) stays
  referenced by the protocol's parser for the connection's life, and uvicorn keeps it and the
  `Response`; once accepted, neither is read again, so their headers go (the ASGI scope keeps
  its own copy, which the app reads);
- Starlette's middleware stack: every layer's coroutine frame stays suspended under a socket
  for its whole life (~4 KiB), though each passes WebSocket scopes straight on (the request
  log, tracing, CORS and the body limit act on HTTP alone); `DirectWebSockets` sends them to
  their endpoint at once;
- uvicorn's `asyncio.Queue` of received messages and `asyncio.Event` for back-pressure: each
  asyncio primitive holds a `deque` of waiters (~760 bytes each, 3 for a queue and its event),
  where one socket has at most one waiter; `realtime.hub.Mailbox` and `Writable` make a
  future only while someone waits.

`serve` passes this class as uvicorn's `ws` protocol.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request
from websockets.server import ServerProtocol

from realtime.hub import Mailbox

WINDOW_BITS = 12
MEMORY_LEVEL = 5


class Writable:
    """What uvicorn uses of its `asyncio.Event` for back-pressure (`set`, `clear`, `wait`),
    with the waiters' futures made only while the transport's buffer is full."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter


class DirectWebSockets(Starlette):
    """Starlette, but a WebSocket to one of `websockets`' paths goes straight to its endpoint,
    past the middleware (which passes WebSockets on untouched) and the router: one coroutine
    frame under an idle socket instead of ten. Every other scope takes Starlette's path."""

    def __init__(self, *args: Any, websockets: Mapping[str, ASGIApp], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.websockets = dict(websockets)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.websockets.get(scope["path"]) if scope["type"] == "websocket" else None
        if endpoint is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await endpoint(scope, receive, send)


# What the handshake's request holds once it is accepted: nothing reads it again.
NO_HEADERS = Headers()


def deflate() -> ServerPerMessageDeflateFactory:
    """permessage-deflate as uvicorn negotiates it, without context takeover either way."""
    return ServerPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=WINDOW_BITS,
        client_max_window_bits=WINDOW_BITS,
        compress_settings={"memLevel": MEMORY_LEVEL},
    )


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """`WebSocketsSansIOProtocol` whose compression keeps no state between messages, and that
    refuses a handshake past the connection limit."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.queue = Mailbox()  # type: ignore[assignment]
        self.writable = Writable()  # type: ignore[assignment]
        if config.ws_per_message_deflate:
            self.conn = ServerProtocol(
                extensions=[deflate()],
                max_size=config.ws_max_size,
                logger=logging.getLogger("uvicorn.error"),
            )

    def handle_connect(self, event: Request) -> None:
        limit = self.config.limit_concurrency
        # uvicorn's own test for an HTTP request (this socket is among the connections).
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self.logger.warning("Exceeded concurrency limit.")
            self.request = event
            self.handshake_initiated = self.handshake_complete = self.close_sent = True
            response = self.conn.reject(HTTPStatus.SERVICE_UNAVAILABLE, "Service Unavailable")
            self.conn.send_response(response)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
            return
        super().handle_connect(event)
        # The scope has what the app reads; websockets' parser keeps `event` for good.
        event.headers = NO_HEADERS

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete:
            # Sent (or refused): the response's headers are not read again.
            self.response = None  # type: ignore[assignment]
