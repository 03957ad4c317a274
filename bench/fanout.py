"""R1 (issue 17): messageAdded fan-out on one server process.

Starts `server.py serve` (one process: `bench.subscribers.served`), opens `--subscribers`
WebSockets each with one messageAdded subscription, spread evenly over `--conversations`
conversations of one user (`--conversations 1`: all on one), then sends one message per
conversation per second for `--seconds` and reports:

- memory per subscriber: the server's resident memory after opening them, less before, each;
- event-to-client latency p50/p99: from just before the send is posted to when a client has
  the message (the content carries the send's wall clock; the clients run in this process,
  on the same cores as the server, so their own delay is in it);
- statements per event, on PostgreSQL with pg_stat_statements loaded (`shared_preload_libraries`):
  the statements of the loaded run less those the same sends cost with no subscriber (a
  first run of `--baseline-seconds`), per message sent;
- the server's CPU (user + system, % of one core) while sending.

    DATABASE_URL=postgresql+asyncpg://... .venv/bin/python bench/fanout.py \\
        --subscribers 10000 --conversations 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.subscribers import graphql, rss_kib, served

QUERY = "subscription ($id: ID!) { messageAdded(conversationId: $id) { id content } }"
SEND = (
    "mutation ($c: ID!, $t: String!) "
    "{ sendMessage(input: {conversationId: $c, content: $t}) { id } }"
)
TICKS = os.sysconf("SC_CLK_TCK")
# Not statements of chatql's own: transaction control, and what asyncpg runs on each new
# connection (type introspection, settings), which a long run amortises to nothing.
NOT_OURS = [
    "BEGIN%",
    "COMMIT%",
    "ROLLBACK%",
    "%typeinfo_tree%",
    "%set_config%",
    "show %",
    "select pg_catalog.version()%",
    "select current_schema()%",
    "%pg_stat_statements%",
]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


async def statement_count(database_url: str) -> int | None:
    """Statements PostgreSQL has run (pg_stat_statements), None when it cannot tell."""
    if not database_url.startswith("postgresql"):
        return None
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    try:
        connection = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        total = await connection.fetchval(
            "SELECT sum(calls) FROM pg_stat_statements WHERE NOT query ILIKE ANY($1)", NOT_OURS
        )
        return int(total or 0)
    except asyncpg.PostgresError:
        return None
    finally:
        await connection.close()


async def subscribe(url: str, token: str, conversation: str) -> ClientConnection:
    ws = await connect(
        url,
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        compression="deflate",
        open_timeout=60,  # a busy server answers handshakes late; that is not a refusal
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": token}}))
    ack = json.loads(await ws.recv())
    assert ack["type"] == "connection_ack", ack
    payload = {"query": QUERY, "variables": {"id": conversation}}
    await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": payload}))
    return ws


async def listen(ws: ClientConnection, latencies: list[float]) -> None:
    async for text in ws:
        message = json.loads(text)
        if message.get("type") != "next":
            continue
        sent = float(message["payload"]["data"]["messageAdded"]["content"])
        latencies.append(time.time() - sent)


async def send_rounds(
    client: httpx.AsyncClient, token: str, conversations: list[str], seconds: int, rate: int
) -> tuple[int, int]:
    """`rate` messages a second for `seconds`, to the conversations in turn (`rate` equal to
    their number: one each a second), at most 32 in flight; (sent, failed)."""
    gate = asyncio.Semaphore(32)
    sent = failed = 0

    async def one(conversation: str) -> None:
        nonlocal sent, failed
        async with gate:
            try:
                response = await client.post(
                    "/graphql",
                    json={"query": SEND, "variables": {"c": conversation, "t": repr(time.time())}},
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.HTTPError:
                failed += 1
                return
            if response.status_code == 200 and "errors" not in response.json():
                sent += 1
            else:
                failed += 1

    turn = 0
    for _ in range(seconds):
        started = time.monotonic()
        batch = [conversations[(turn + n) % len(conversations)] for n in range(rate)]
        turn += rate
        await asyncio.gather(*(one(c) for c in batch))
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    return sent, failed


async def run(base: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    database_url = os.environ.get("DATABASE_URL", "")
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        name = f"fanout{os.getpid()}x{int(time.time())}"  # the database may be reused
        signed = await graphql(
            client,
            f'mutation {{ signUp(input: {{username: "{name}", email: "{name}@example.com", '
            'password: "bench-password"}) { token } }',
        )
        token = signed["signUp"]["token"]
        conversations = [
            (
                await graphql(
                    client, 'mutation { createConversation(input: {title: "r1"}) { id } }', token
                )
            )["createConversation"]["id"]
            for _ in range(args.conversations)
        ]
        # Baseline: what the sends cost with nobody listening.
        before = await statement_count(database_url)
        rate = args.rate or len(conversations)
        base_sent, _ = await send_rounds(client, token, conversations, args.baseline_seconds, rate)
        after = await statement_count(database_url)
        per_send = (after - before) / base_sent if before is not None and after else None

        await asyncio.sleep(1)
        rss_before = rss_kib(pid)
        url = base.replace("http://", "ws://") + "/graphql"
        sockets: list[ClientConnection] = []
        opened_at = time.monotonic()
        for start in range(0, args.subscribers, args.batch):
            sockets += await asyncio.gather(
                *(
                    subscribe(url, f"Bearer {token}", conversations[n % len(conversations)])
                    for n in range(start, min(start + args.batch, args.subscribers))
                )
            )
        opened = time.monotonic() - opened_at
        await asyncio.sleep(3)
        rss_after = rss_kib(pid)
        latencies: list[float] = []
        listeners = [asyncio.create_task(listen(ws, latencies)) for ws in sockets]

        before = await statement_count(database_url)
        cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
        client_before = time.process_time()
        sent, failed = await send_rounds(client, token, conversations, args.seconds, rate)
        expected = sent * args.subscribers // len(conversations)
        deadline = time.monotonic() + 30
        while len(latencies) < expected and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        wall = time.monotonic() - wall_before
        cpu = (cpu_seconds(pid) - cpu_before) / wall
        client_cpu = (time.process_time() - client_before) / wall
        after = await statement_count(database_url)
        for task in listeners:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    ordered = sorted(latencies)

    def quantile(q: float) -> float | None:
        return (
            round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)
            if ordered
            else None
        )

    statements = (
        round(((after - before) - sent * per_send) / sent, 2)
        if before is not None and after is not None and per_send is not None and sent
        else None
    )
    return {
        "subscribers": args.subscribers,
        "conversations": args.conversations,
        "database": "postgresql" if database_url.startswith("postgresql") else "sqlite",
        "seconds_to_open": round(opened, 1),
        "kib_per_subscriber": round((rss_after - rss_before) / args.subscribers, 1),
        "messages_sent": sent,
        "sends_failed": failed,
        "sends_per_second_asked": rate,
        "sends_per_second": round(sent / args.seconds, 1),
        "events_expected": expected,
        "events_delivered": len(latencies),
        "latency_ms_p50": quantile(0.5),
        "latency_ms_p99": quantile(0.99),
        "latency_ms_mean": round(statistics.fmean(ordered) * 1000, 1) if ordered else None,
        "statements_per_send_alone": round(per_send, 2) if per_send is not None else None,
        "statements_per_event_for_fan_out": statements,
        "server_cpu_percent_of_one_core": round(cpu * 100, 1),
        "client_cpu_percent_of_one_core": round(client_cpu * 100, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--baseline-seconds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=25, help="sockets opened at once")
    parser.add_argument(
        "--rate", type=int, default=0, help="sends a second (default: one per conversation)"
    )
    args = parser.parse_args()
    with served(args.subscribers) as (base, pid):
        result = asyncio.run(run(base, pid, args))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
