"""uvicorn's HTTP protocol with a bound on the time a client takes to send a request head.

uvicorn (0.54) closes a connection idle between requests (`timeout_keep_alive`) but bounds
nothing else: a client that opens a connection and sends nothing, or sends one header line
every few seconds (Slowloris), keeps its socket, and the process's file descriptors, for as
long as it likes. Web servers in front of applications bound this (nginx's
`client_header_timeout`, Apache's `mod_reqtimeout`); this protocol does it in uvicorn.

A timer starts when the connection opens, and again when the first byte of a further request
on it arrives (between requests, the keep-alive timeout applies). It stops when the head (the
request line and every header) is complete, so a WebSocket upgrade, a slow body and a slow
answer are not its business. When it fires, the connection is closed without an answer (as
nginx does); if an answer to an earlier, pipelined request is still being written, the
connection closes after it instead.

chatql runs uvicorn's httptools protocol (`httptools` is a dependency, so uvicorn's "auto"
choice is this one); `serve` passes `partial(HeaderTimeoutProtocol, header_timeout=...)` as
uvicorn's `http` protocol factory.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

logger = logging.getLogger("chatql.http")


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that closes a connection whose request head takes longer than
    `header_timeout` seconds to arrive."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        logger.debug(
            "closing a connection whose request head took over %ss",
            self.header_timeout,
            extra={"fields": {"client": self.client}},
        )
        # As on a graceful shutdown: close now, or after the answer being written.
        self.shutdown()
