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

It also writes a response's head and its first body part in one write (`HeadWithBody`):
uvicorn writes the status line and headers as soon as the application starts its response,
then the body, two `send` system calls where one would do. On loopback (the bench, or a proxy on
the same host) each write delivers a segment and wakes the reader: py-spy under the Q2 bench
put a fifth of the server's CPU in the head's write alone (issue 14).

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
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not before:  # a request (not an upgrade) begins
            cycle.transport = HeadWithBody(self.transport, cycle, self.loop)  # type: ignore[assignment]

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


class HeadWithBody:
    """The connection's transport as one response sees it: the response's head (uvicorn's
    first write once the response has started) is held back and written together with the
    first body part, in one system call (`writelines`, a vectored write). A head with no body
    part right behind it (a streamed answer that waits for its first event, a HEAD request)
    goes out on the loop's next turn, and before anything closes the connection. Writes
    before the response starts (`100 Continue`) go out at once. Everything else is the
    transport's own."""

    __slots__ = ("_cycle", "_flush", "_head", "_loop", "_started", "transport")

    def __init__(
        self, transport: asyncio.Transport, cycle: Any, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.transport = transport
        self._cycle = cycle
        self._loop = loop
        self._head: bytes | None = None
        self._flush: asyncio.Handle | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if self._flush is not None:
                self._flush.cancel()
                self._flush = None
            self.transport.writelines((head, data))
        elif not self._started and self._cycle.response_started:
            self._started = True
            self._head = data
            self._flush = self._loop.call_soon(self.flush)
        else:
            self.transport.write(data)

    def flush(self) -> None:
        """Write the held head, if any (the body did not follow it at once)."""
        self._flush = None
        head, self._head = self._head, None
        if head is not None and not self.transport.is_closing():
            self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)
