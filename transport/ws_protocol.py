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

`serve` passes this class as uvicorn's `ws` protocol.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request
from websockets.server import ServerProtocol

WINDOW_BITS = 12
MEMORY_LEVEL = 5


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
