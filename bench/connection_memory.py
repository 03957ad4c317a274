"""Where an idle (or subscribed) WebSocket's memory goes: tracemalloc on a real `serve` process.

Starts `python server.py serve` (SQLite in a temporary folder) under tracemalloc, opens a few
sockets and closes them (what the first socket allocates for good is paid), takes a snapshot,
opens N `graphql-transport-ws` sockets offering permessage-deflate, each logged in by
`connection_init` (with `--subscribe`, each also holding one `messageAdded` subscription that
has delivered one event), takes another, and prints the growth per socket, grouped by where
it was allocated; then closes them and prints what is left.

    .venv/bin/python bench/connection_memory.py --sockets 300 [--subscribe] [--top 25]

The server takes its snapshots on SIGUSR1 (`python bench/connection_memory.py serve ...`
wraps `server.py serve`), so the client's own allocations are not in them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUERY = "subscription ($id: ID!) { messageAdded(conversationId: $id) { id content } }"


def serve_traced(arguments: list[str]) -> int:
    """`server.py serve`; the first SIGUSR1 starts tracemalloc (so start-up runs at full speed
    and what it allocated is not in the diffs), each writes a snapshot to $SNAPSHOT_PATH.<n>."""
    taken = [0]
    path = os.environ["SNAPSHOT_PATH"]

    def snapshot(*_: Any) -> None:
        import gc

        gc.collect()
        if not tracemalloc.is_tracing():
            tracemalloc.start(int(os.environ.get("TRACE_FRAMES", "12")))
        tracemalloc.take_snapshot().dump(f"{path}.{taken[0]}")
        taken[0] += 1
        Path(f"{path}.{taken[0] - 1}.done").touch()

    signal.signal(signal.SIGUSR1, snapshot)
    from app.cli import main

    return main(["serve", *arguments])


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], Path, int]:
    """The traced server (SQLite in a fresh folder), its folder and its port."""
    from tests.process import free_port, server_environment

    folder = Path(tempfile.mkdtemp(prefix="chatql-memory-"))
    port = free_port()
    environment = server_environment(
        f"sqlite+aiosqlite:///{folder}/db.sqlite",
        SNAPSHOT_PATH=str(folder / "snapshot"),
        TRACE_FRAMES=str(args.frames),
    )
    with (folder / "out.log").open("w") as out:
        process = subprocess.Popen(
            [sys.executable, __file__, "serve", "--port", str(port)],
            cwd=folder,
            env=environment,
            stdout=out,
            stderr=out,
            text=True,
        )
    return process, folder, port


def wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.1)


async def run(args: argparse.Namespace) -> None:
    import httpx

    import tests.ws
    from tests.process import Served, wait_until_healthy
    from tests.ws import TRANSPORT_WS, process_socket

    tests.ws.WAIT_SECONDS = 120  # a traced server on a loaded machine is slow

    process, folder, port = start_server(args)
    snapshots = folder / "snapshot"
    served = Served(url=f"http://127.0.0.1:{port}", process=process, log_path=folder / "out.log")
    taken = [0]

    async def snapshot() -> tracemalloc.Snapshot:
        number = taken[0]
        taken[0] += 1
        process.send_signal(signal.SIGUSR1)
        await asyncio.to_thread(wait_for, Path(f"{snapshots}.{number}.done"))
        return tracemalloc.Snapshot.load(f"{snapshots}.{number}")

    try:
        wait_until_healthy(served)
        async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
            answer = await client.post(
                "/graphql",
                json={
                    "query": 'mutation { signUp(input: {username: "idle", email: '
                    '"idle@example.com", password: "idle-sockets"}) { token } }'
                },
            )
            token = answer.json()["data"]["signUp"]["token"]
            headers = {"Authorization": f"Bearer {token}"}
            started = await client.post(
                "/graphql",
                json={"query": 'mutation { createConversation(input: {title: "t"}) { id } }'},
                headers=headers,
            )
            conversation = started.json()["data"]["createConversation"]["id"]

        async def send(content: str) -> None:
            async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
                await client.post(
                    "/graphql",
                    json={
                        "query": "mutation ($c: ID!, $t: String!) { sendMessage(input: "
                        "{conversationId: $c, content: $t}) { id } }",
                        "variables": {"c": conversation, "t": content},
                    },
                    headers=headers,
                )

        async def open_sockets(stack: contextlib.AsyncExitStack, count: int) -> list[Any]:
            async def one() -> Any:
                socket = await stack.enter_async_context(
                    process_socket(served.url, TRANSPORT_WS, compression="deflate")
                )
                await socket.login(token)
                if args.subscribe:
                    await socket.subscribe("1", QUERY, {"id": conversation})
                return socket

            sockets: list[Any] = []
            # 10 at a time: each login reads the viewer, and a loaded machine's pool runs dry.
            for start in range(0, count, 10):
                sockets += await asyncio.gather(*(one() for _ in range(min(10, count - start))))
            if args.subscribe:
                await asyncio.sleep(1)
                await send("hello")
                await asyncio.gather(*(socket.next_data("1") for socket in sockets))
            await asyncio.sleep(1)
            return sockets

        async with contextlib.AsyncExitStack() as stack:
            await open_sockets(stack, 5)
        await asyncio.sleep(1)
        before = await snapshot()
        async with contextlib.AsyncExitStack() as stack:
            await open_sockets(stack, args.sockets)
            held = await snapshot()
        await asyncio.sleep(2)
        after = await snapshot()
    finally:
        process.terminate()
        process.wait(timeout=30)

    def report(title: str, new: tracemalloc.Snapshot, old: tracemalloc.Snapshot) -> None:
        stats = new.compare_to(old, args.group)
        total = sum(stat.size_diff for stat in stats)
        print(f"\n## {title}: {total / args.sockets / 1024:.2f} KiB a socket ({total} B)")
        for stat in stats[: args.top]:
            if abs(stat.size_diff) < args.sockets * 64:
                continue
            where = stat.traceback.format(limit=args.show)
            print(
                f"{stat.size_diff / args.sockets:8.0f} B  {stat.count_diff / args.sockets:6.1f} "
                f"blocks  " + " <- ".join(line.strip() for line in where if "File" in line)
            )

    report("held", held, before)
    report("left after closing", after, before)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        return serve_traced(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=300)
    parser.add_argument("--subscribe", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--show", type=int, default=1, help="frames shown per row")
    parser.add_argument("--group", default="lineno", choices=["lineno", "filename", "traceback"])
    args = parser.parse_args()
    started = time.monotonic()
    asyncio.run(run(args))
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
