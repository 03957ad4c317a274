"""How many messageAdded subscribers one server process holds, and the memory they take.

Starts `python server.py serve` on a random port (SQLite in a temporary folder unless
DATABASE_URL is set), opens N WebSocket connections each with one subscription to the same
conversation, reads the server's resident memory from /proc before and after, then sends one
message and times until every subscriber has it.

    .venv/bin/python bench/subscribers.py --connections 2000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[1]
QUERY = "subscription ($id: ID!) { messageAdded(conversationId: $id) { id content } }"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def graphql(client: httpx.AsyncClient, query: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.post("/graphql", json={"query": query}, headers=headers)
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


async def subscribe(
    url: str, token: str, conversation: str, *, compression: bool
) -> ClientConnection:
    ws = await connect(
        url,
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        max_queue=4,
        compression="deflate" if compression else None,
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": token}}))
    ack = json.loads(await ws.recv())
    assert ack["type"] == "connection_ack", ack
    payload = {"query": QUERY, "variables": {"id": conversation}}
    await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": payload}))
    return ws


async def run(
    base: str, pid: int, connections: int, batch: int, compression: bool
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        signed = await graphql(
            client,
            'mutation { signUp(input: {username: "bench", email: "bench@example.com", '
            'password: "bench-password"}) { token } }',
        )
        token = signed["signUp"]["token"]
        created = await graphql(
            client, 'mutation { createConversation(input: {title: "bench"}) { id } }', token
        )
        conversation = created["createConversation"]["id"]
        await asyncio.sleep(1)
        before = rss_kib(pid)
        url = base.replace("http://", "ws://") + "/graphql"
        sockets: list[ClientConnection] = []
        started = time.monotonic()
        for start in range(0, connections, batch):
            count = min(batch, connections - start)
            sockets += await asyncio.gather(
                *(
                    subscribe(url, f"Bearer {token}", conversation, compression=compression)
                    for _ in range(count)
                )
            )
        opened = time.monotonic() - started
        await asyncio.sleep(2)
        after = rss_kib(pid)
        send = (
            'mutation { sendMessage(input: {conversationId: "' + conversation + '", '
            'content: "hello"}) { id } }'
        )
        sent_at = time.monotonic()
        await graphql(client, send, token)
        await asyncio.gather(*(ws.recv() for ws in sockets))
        fan_out = time.monotonic() - sent_at
        await asyncio.gather(*(ws.close() for ws in sockets))
    return {
        "subscribers": connections,
        "permessage_deflate": compression,
        "server_rss_before_kib": before,
        "server_rss_after_kib": after,
        "kib_per_subscriber": round((after - before) / connections, 1),
        "seconds_to_open": round(opened, 1),
        "seconds_until_all_received_one_message": round(fan_out, 2),
    }


@contextlib.contextmanager
def served(connections: int, **settings: str) -> Iterator[tuple[str, int]]:
    """`server.py serve` (one process) on a free port, allowed `connections` sockets and more,
    on DATABASE_URL or a new SQLite file; yields its base URL and pid, stops it at the end."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, connections + 200)), hard))
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        env = {
            **os.environ,
            "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite+aiosqlite:///{folder}/b.db"),
            "CHATQL_SECRET_KEY": "bench-secret-key-that-is-long-enough-for-hs256",
            "CHATQL_LOG_LEVEL": "WARNING",
            **settings,
        }
        server = subprocess.Popen(
            [sys.executable, "server.py", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            preexec_fn=lambda: resource.setrlimit(
                resource.RLIMIT_NOFILE, (min(hard, connections + 200), hard)
            ),
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            yield base, server.pid
        finally:
            server.terminate()
            server.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100, help="connections opened at once")
    parser.add_argument(
        "--no-compression", action="store_true", help="clients do not offer permessage-deflate"
    )
    args = parser.parse_args()
    with served(args.connections) as (base, pid):
        result = asyncio.run(run(base, pid, args.connections, args.batch, not args.no_compression))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
