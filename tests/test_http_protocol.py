"""`transport.http_protocol` over a real loopback socket: a response's head and body go out in
one write, and a streamed answer's head goes out before its first part."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.process import free_port
from transport.http_protocol import HeaderTimeoutProtocol

BODY = b'{"data":{"__typename":"Query"}}'


class Recorder:
    """A transport that notes what each call that writes hands it (one system call each)."""

    def __init__(self, transport: asyncio.Transport, calls: list[bytes]) -> None:
        self.transport = transport
        self.calls = calls

    def write(self, data: bytes) -> None:
        self.calls.append(bytes(data))
        self.transport.write(data)

    def writelines(self, parts: Any) -> None:
        parts = [bytes(part) for part in parts]
        self.calls.append(b"".join(parts))
        self.transport.writelines(parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class Recording(HeaderTimeoutProtocol):
    calls: ClassVar[list[bytes]] = []

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(Recorder(transport, self.calls))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[int]:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        lifespan="off",
        log_level="warning",
        http=functools.partial(Recording, header_timeout=5.0),  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield config.port
    finally:
        server.should_exit = True
        await task


async def test_a_head_goes_out_with_its_body_and_a_streamed_head_before_its_parts() -> None:
    Recording.calls = []
    released = asyncio.Event()

    async def fixed(request: Request) -> Response:
        return Response(BODY, media_type="application/json")

    async def parts() -> AsyncIterator[bytes]:
        await released.wait()
        yield b"first"

    async def streamed(request: Request) -> StreamingResponse:
        return StreamingResponse(parts(), media_type="text/plain")

    app = Starlette(routes=[Route("/fixed", fixed), Route("/streamed", streamed)])
    async with served(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /fixed HTTP/1.1\r\nHost: chatql\r\n\r\n")
        fixed_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        fixed_body = await asyncio.wait_for(reader.readexactly(len(BODY)), 10)
        writer.write(b"GET /streamed HTTP/1.1\r\nHost: chatql\r\n\r\n")
        # The head arrives while the answer waits for its first part.
        streamed_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        released.set()
        first_part = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 10)
        writer.close()
        await writer.wait_closed()

    assert fixed_body == BODY
    assert b"HTTP/1.1 200 OK" in fixed_head and b"content-length: 31" in fixed_head
    assert streamed_head.startswith(b"HTTP/1.1 200 OK") and b"chunked" in streamed_head
    assert first_part == b"5\r\nfirst\r\n0\r\n\r\n"
    # One write for the fixed answer, its head and body together; the streamed answer's head
    # on its own, then its part, then the end of its chunks.
    assert Recording.calls == [
        fixed_head + fixed_body,
        streamed_head,
        b"5\r\nfirst\r\n",
        b"0\r\n\r\n",
    ]
