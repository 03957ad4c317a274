"""Export rate (issue 16's bench line): MB/s of `GET /export` for the user with the most
messages, and the server's peak memory growth while it streams.

    DATABASE_URL=postgresql+asyncpg://... python bench/export_rate.py [--rounds 3]

Needs seeded data (`python server.py seed`, whose users log in with `chatql-demo`; `--password`
for another). Starts `python server.py serve` on a free loopback port with that database, finds
the largest user by messages, logs in as them, downloads the export `--rounds` times (reading
and discarding it as fast as the socket gives it) and prints one markdown table row per round
and the median: bytes, conversations, messages, seconds, MB/s, and the server's VmHWM growth.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-key-that-is-long-enough-for-hs256"
LARGEST = text(
    """
    SELECT u.username, count(m.id) AS messages
    FROM users u
    JOIN conversations c ON c.user_id = u.id
    JOIN messages m ON m.conversation_id = c.id
    GROUP BY u.username ORDER BY messages DESC, u.username LIMIT 1
    """
)
LOG_IN = (
    "mutation L($l: String!, $p: String!) { logIn(input: {login: $l, password: $p}) { token } }"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def largest_user(database_url: str) -> tuple[str, int]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            row = (await connection.execute(LARGEST)).one()
    finally:
        await engine.dispose()
    return str(row.username), int(row.messages)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--password", default="chatql-demo")
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        print("error: set DATABASE_URL to a seeded database", file=sys.stderr)
        return 2
    username, total = asyncio.run(largest_user(database_url))
    port = free_port()
    environment = {**os.environ, "CHATQL_SECRET_KEY": SECRET, "CHATQL_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "server.py"), "serve", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            for _ in range(600):
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            answer = client.post(
                "/graphql",
                json={"query": LOG_IN, "variables": {"l": username, "p": args.password}},
            ).json()
            token = answer["data"]["logIn"]["token"]
            headers = {"Authorization": f"Bearer {token}"}
            print(f"largest user: {username} ({total:,} messages)\n")
            print("| round | MB | conversations | messages | s | MB/s | server peak growth MB |")
            print("|---|---|---|---|---|---|---|")
            rates = []
            for round_number in range(1, args.rounds + 1):
                before = peak_rss(server.pid)
                size = conversations = messages = 0
                started = time.perf_counter()
                with client.stream("GET", "/export", headers=headers) as response:
                    response.raise_for_status()
                    for line in response.iter_lines():
                        size += len(line) + 1
                        conversations += 1
                        messages += line.count('"parentId":')  # cheaper than parsing
                seconds = time.perf_counter() - started
                rates.append(size / seconds / 1e6)
                growth = (peak_rss(server.pid) - before) / 1e6
                print(
                    f"| {round_number} | {size / 1e6:.1f} | {conversations:,} | {messages:,} | "
                    f"{seconds:.2f} | {rates[-1]:.1f} | {growth:.1f} |"
                )
            print(f"\nmedian: {statistics.median(rates):.1f} MB/s")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
