"""A small GraphQL-over-WebSocket client speaking both protocols, for tests.

It runs over httpx-ws (the ASGI app in-process) or over `websockets` (a real server process),
and reports every server message in one shape: `Event(kind, id, payload)`, where the legacy
protocol's `data` is called `next` like the new one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import websockets
from httpx_ws import WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from websockets.asyncio.client import connect as websockets_connect

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
PROTOCOLS = [TRANSPORT_WS, LEGACY_WS]
WAIT_SECONDS = 5.0


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Event:
    kind: str
    id: str | None = None
    payload: Any = None


class JsonSocket(Protocol):
    async def send(self, data: dict[str, Any]) -> None: ...

    async def send_text(self, text: str) -> None: ...

    async def receive(self, seconds: float) -> dict[str, Any]: ...


class HttpxSocket:
    def __init__(self, session: Any) -> None:
        self.session = session

    async def send(self, data: dict[str, Any]) -> None:
        await self.session.send_json(data)

    async def send_text(self, text: str) -> None:
        await self.session.send_text(text)

    async def receive(self, seconds: float) -> dict[str, Any]:
        try:
            message: dict[str, Any] = await self.session.receive_json(timeout=seconds)
        except WebSocketDisconnect as exc:
            raise Closed(exc.code, exc.reason or "") from exc
        return message


class WebsocketsSocket:
    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def send(self, data: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(data))

    async def send_text(self, text: str) -> None:
        await self.connection.send(text)

    async def receive(self, seconds: float) -> dict[str, Any]:
        try:
            text = await asyncio.wait_for(self.connection.recv(), seconds)
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            raise Closed(code, exc.rcvd.reason if exc.rcvd else "") from exc
        message: dict[str, Any] = json.loads(text)
        return message


class GraphQLSocket:
    def __init__(self, socket: JsonSocket, protocol: str) -> None:
        self.socket = socket
        self.protocol = protocol

    async def init(self, payload: dict[str, Any] | None = None) -> Event:
        message: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            message["payload"] = payload
        await self.socket.send(message)
        return await self.receive()

    async def refused(self, payload: dict[str, Any]) -> tuple[list[Event], Closed]:
        """The messages, then the close, that answer a `connection_init` the server refuses."""
        await self.socket.send({"type": "connection_init", "payload": payload})
        events: list[Event] = []
        while True:
            try:
                events.append(await self.receive())
            except Closed as closed:
                return events, closed

    async def login(self, token: str) -> None:
        ack = await self.init({"authorization": f"Bearer {token}"})
        assert ack.kind == "connection_ack", ack

    async def subscribe(
        self,
        op_id: str,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
    ) -> None:
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        payload: dict[str, Any] = {"query": query, "variables": variables or {}}
        if operation_name is not None:
            payload["operationName"] = operation_name
        await self.socket.send({"type": kind, "id": op_id, "payload": payload})

    async def execute(
        self,
        op_id: str,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
    ) -> dict[str, Any]:
        """A query or mutation over the socket, answered in the shape of an HTTP body: the
        `next` payload (then `complete`), or `{"errors": [...]}` for an `error` message."""
        await self.subscribe(op_id, query, variables, operation_name)
        event = await self.receive()
        assert event.id == op_id, event
        if event.kind == "error":
            assert isinstance(event.payload, list), event
            return {"errors": event.payload}
        assert event.kind == "next", event
        assert await self.receive() == Event("complete", op_id), "the operation went on"
        result: dict[str, Any] = event.payload
        return result

    async def stop(self, op_id: str) -> None:
        kind = "complete" if self.protocol == TRANSPORT_WS else "stop"
        await self.socket.send({"type": kind, "id": op_id})

    async def receive(self) -> Event:
        while True:
            message = await self.socket.receive(WAIT_SECONDS)
            kind = message["type"]
            if kind in {"ka", "ping", "pong"}:
                continue
            return Event(
                kind="next" if kind == "data" else kind,
                id=message.get("id"),
                payload=message.get("payload"),
            )

    async def next_data(self, op_id: str) -> dict[str, Any]:
        """The data of the next result of `op_id`, which must carry no errors."""
        event = await self.receive()
        assert event.kind == "next" and event.id == op_id, event
        assert "errors" not in event.payload, event.payload
        data: dict[str, Any] = event.payload["data"]
        return data

    async def errors(self, op_id: str) -> list[dict[str, Any]]:
        """The errors that end `op_id`, in whichever message the protocol carries them.

        An error before execution is one `error` message; an error raised by the resolver is
        a result with errors, then `complete`.
        """
        event = await self.receive()
        assert event.id == op_id, event
        if event.kind == "error":
            payload = event.payload
            return payload if isinstance(payload, list) else [payload]
        assert event.kind == "next" and event.payload.get("errors"), event
        errors: list[dict[str, Any]] = event.payload["errors"]
        assert await self.receive() == Event("complete", op_id), "the operation went on"
        return errors

    async def closed(self) -> Closed:
        """The close of the connection; any message still arriving first fails."""
        try:
            event = await self.receive()
        except Closed as closed:
            return closed
        raise AssertionError(f"expected the socket to close, got {event}")


@contextlib.asynccontextmanager
async def asgi_socket(app: Any, protocol: str) -> AsyncIterator[GraphQLSocket]:
    """A socket to the ASGI app; entered and left in the test's own task, as anyio requires."""
    async with (
        ASGIWebSocketTransport(app=app) as transport,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
        aconnect_ws("/graphql", client, subprotocols=[protocol]) as session,  # type: ignore[var-annotated]
    ):
        yield GraphQLSocket(HttpxSocket(session), protocol)


@contextlib.asynccontextmanager
async def process_socket(
    base_url: str, protocol: str, *, receive_buffer: int | None = None, **options: Any
) -> AsyncIterator[GraphQLSocket]:
    """A socket to a server process; `receive_buffer` fixes the kernel's receive buffer
    (which otherwise grows to megabytes), for tests of a client that stops reading."""
    url = base_url.replace("http://", "ws://") + "/graphql"
    if receive_buffer is not None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        options["sock"] = sock
    async with websockets_connect(url, subprotocols=[protocol], **options) as connection:  # type: ignore[list-item]
        yield GraphQLSocket(WebsocketsSocket(connection), protocol)
