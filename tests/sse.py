"""GraphQL over Server-Sent Events, for tests: the app served by uvicorn on a loopback port (the
app's own state stays in reach: its hub, its settings), a raw reader of the event stream over
httpx, and the `graphql-sse` npm client run with Node.js (`tests/conformance/sse.mjs`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from tests.process import free_port

CLIENT = Path(__file__).resolve().parent / "conformance" / "sse.mjs"
WAIT_SECONDS = 10.0
EVENT_STREAM = {"Accept": "text/event-stream"}


@contextlib.asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[str]:
    """The app (already started) served over real HTTP; its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        server.force_exit = True
        await task


@dataclass(frozen=True)
class Event:
    kind: str
    data: Any = None


@dataclass
class EventReader:
    """The events of one streamed answer, read as they come: `next` with its data parsed,
    `complete`, and `comment` for each comment line (the heartbeat)."""

    response: httpx.Response
    lines: AsyncIterator[str] = field(init=False)

    def __post_init__(self) -> None:
        self.lines = self.response.aiter_lines()

    async def receive(self, *, comments: bool = False) -> Event:
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                event = await self._event()
                if comments or event.kind != "comment":
                    return event

    async def _event(self) -> Event:
        kind, data = None, []
        async for line in self.lines:
            if line == "":
                if kind is not None:
                    text = "\n".join(data)
                    return Event(kind, json.loads(text) if text else None)
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                return Event("comment", value)
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
        raise EOFError("the stream ended")

    async def rest(self) -> list[Event]:
        """Every event up to the end of the stream."""
        events = []
        with contextlib.suppress(EOFError):
            while True:
                events.append(await self.receive())
        return events


@contextlib.asynccontextmanager
async def sse(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
) -> AsyncIterator[EventReader]:
    """A POST with `Accept: text/event-stream`, whose answer must be a stream."""
    headers = dict(EVENT_STREAM)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = {"query": query, "variables": variables or {}}
    async with client.stream("POST", "/graphql", json=body, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"] == "text/event-stream"
        yield EventReader(response)


def real_client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=WAIT_SECONDS)


@dataclass
class NodeClient:
    """One operation run by the `graphql-sse` client: each line it prints, parsed."""

    process: asyncio.subprocess.Process

    async def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(WAIT_SECONDS):
            line = await self.process.stdout.readline()
        if not line:
            assert self.process.stderr is not None
            raise AssertionError((await self.process.stderr.read()).decode())
        result: dict[str, Any] = json.loads(line)
        return result


@contextlib.asynccontextmanager
async def node_client(
    url: str, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
) -> AsyncIterator[NodeClient]:
    node = shutil.which("node")
    if node is None or not (CLIENT.parent / "node_modules" / "graphql-sse").is_dir():
        pytest.fail(
            "Node.js or the graphql-sse client is missing: run ./test.sh, which installs both "
            "(or `npm ci` in tests/conformance).",
            pytrace=False,
        )
    request = json.dumps({"query": query, "variables": variables or {}})
    process = await asyncio.create_subprocess_exec(
        node,
        str(CLIENT),
        f"{url}/graphql",
        request,
        *([token] if token is not None else []),
        cwd=CLIENT.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield NodeClient(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
