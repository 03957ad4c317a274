"""S1 (issue 15): streamed answers. N concurrent streams of M appends each, one
`messageStream` subscriber per stream, against one server process.

Starts `python server.py serve` on a random port (SQLite in a temporary folder unless
DATABASE_URL is set), starts N messages, subscribes to each over graphql-transport-ws, then
lets N producers append M deltas each (one after another per stream, the streams at once) and
finish. Reports appends a second, the time from an append's response to the chunk with its seq
reaching the subscriber (p50, p99), SQL statements per append (the server's
`chatql_graphql_sql_statements` histogram, so the viewer's read is included) and server CPU per
append (/proc).

    .venv/bin/python bench/stream.py --streams 50 --appends 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench.subscribers import free_port, graphql

ROOT = Path(__file__).resolve().parents[1]
STREAM = "subscription ($m: ID!) { messageStream(messageId: $m, afterSeq: 0) { seq delta status } }"
APPEND = (
    "mutation ($m: ID!, $seq: Int!, $d: String!) "
    "{ appendMessage(input: {messageId: $m, seq: $seq, delta: $d}) { seq } }"
)
RETRIES: list[int] = []
DELTA = "token " * 4  # 24 characters, about what a model sends per chunk


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def statements(metrics: str) -> tuple[float, float]:
    """(sum, count) of the statements-per-request histogram."""
    found = {}
    for name in ("sum", "count"):
        match = re.search(
            rf"^chatql_graphql_sql_statements_{name}(?:{{[^}}]*}})? (\S+)$", metrics, re.M
        )
        found[name] = float(match.group(1)) if match else 0.0
    return found["sum"], found["count"]


async def subscribe(url: str, token: str, message: str) -> ClientConnection:
    ws = await connect(url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": token}}))
    ack = json.loads(await ws.recv())
    assert ack["type"] == "connection_ack", ack
    payload = {"query": STREAM, "variables": {"m": message}}
    await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": payload}))
    return ws


async def consume(ws: ClientConnection, arrived: dict[int, float]) -> None:
    """Until `complete`: for each chunk, the time every seq it covers arrived."""
    last = 0
    while True:
        message = json.loads(await ws.recv())
        if message["type"] == "complete":
            return
        assert message["type"] == "next" and "errors" not in message["payload"], message
        seq = message["payload"]["data"]["messageStream"]["seq"]
        now = time.monotonic()
        for covered in range(last + 1, seq + 1):
            arrived[covered] = now
        last = max(last, seq)


async def produce(
    client: httpx.AsyncClient, token: str, message: str, appends: int, answered: dict[int, float]
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    for seq in range(1, appends + 1):
        body = {"query": APPEND, "variables": {"m": message, "seq": seq, "d": DELTA}}
        while True:  # an append is idempotent: one answered SERVICE_UNAVAILABLE is sent again
            response = await client.post("/graphql", json=body, headers=headers)
            errors = response.json().get("errors")
            if not errors:
                break
            assert errors[0]["extensions"]["code"] == "SERVICE_UNAVAILABLE", response.text
            RETRIES.append(seq)
        answered[seq] = time.monotonic()
    finish = {"query": "mutation ($m: ID!) { finishMessage(input: {messageId: $m}) { status } }"}
    finish["variables"] = {"m": message}  # type: ignore[assignment]
    response = await client.post("/graphql", json=finish, headers=headers)
    assert "errors" not in response.json(), response.text


async def run(base: str, pid: int, streams: int, appends: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=streams + 10)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
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
        start = (
            'mutation { startMessage(input: {conversationId: "' + conversation + '", '
            'model: "bench"}) { id } }'
        )
        messages = [
            (await graphql(client, start, token))["startMessage"]["id"] for _ in range(streams)
        ]
        url = base.replace("http://", "ws://") + "/graphql"
        sockets = await asyncio.gather(*(subscribe(url, f"Bearer {token}", m) for m in messages))
        await asyncio.sleep(1)
        arrived: list[dict[int, float]] = [{} for _ in messages]
        answered: list[dict[int, float]] = [{} for _ in messages]
        metrics_before = statements((await client.get("/metrics")).text)
        cpu_before = cpu_seconds(pid)
        started = time.monotonic()
        consumers = [asyncio.create_task(consume(ws, arrived[i])) for i, ws in enumerate(sockets)]
        await asyncio.gather(
            *(produce(client, token, m, appends, answered[i]) for i, m in enumerate(messages))
        )
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(pid) - cpu_before
        metrics_after = statements((await client.get("/metrics")).text)
        await asyncio.wait_for(asyncio.gather(*consumers), 60)
        await asyncio.gather(*(ws.close() for ws in sockets))
    latencies = sorted(
        (arrived[i][seq] - answered[i][seq]) * 1000
        for i in range(streams)
        for seq in range(1, appends + 1)
    )
    total = streams * appends
    requests = metrics_after[1] - metrics_before[1]
    return {
        "streams": streams,
        "appends_per_stream": appends,
        "appends_per_second": round(total / elapsed),
        "append_to_chunk_ms_p50": round(statistics.median(latencies), 1),
        "append_to_chunk_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1], 1),
        "statements_per_request": (
            round((metrics_after[0] - metrics_before[0]) / requests, 2) if requests else None
        ),
        "server_cpu_ms_per_append": round(cpu / total * 1000, 3),
        "appends_sent_again": len(RETRIES),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--appends", type=int, default=200)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        env = {
            **os.environ,
            "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite+aiosqlite:///{folder}/b.db"),
            "CHATQL_SECRET_KEY": "bench-secret-key-that-is-long-enough-for-hs256",
            "CHATQL_LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen(
            [sys.executable, "server.py", "serve", "--port", str(port)], cwd=ROOT, env=env
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            result = asyncio.run(run(base, server.pid, args.streams, args.appends))
        finally:
            server.terminate()
            server.wait(30)
    print(json.dumps({"database": env["DATABASE_URL"].split(":", 1)[0], **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
