"""LISTEN/NOTIFY's limits on this machine (issue 17, item 4); run through `bench/notify`.

PostgreSQL serialises the commits of transactions that sent a NOTIFY: `PreCommit_Notify`
takes a database-wide lock (`AccessExclusiveLock` on the database's notify object) that is held
until the commit is durable, so such commits queue one behind the other, and a fsync is no
longer shared between them (no group commit). Three measurements:

1. **SQL alone** (pgbench): transactions inserting one row, with and without
   `pg_notify('chatql_messages', '<conversation>:<id>')` (chatql's payload), at 1, 8 and 32
   clients, with `synchronous_commit` on (durable, the default) and off.
2. **Through chatql**: `sendMessage` by 8 clients against two one-worker servers on the same
   database, one of them with `PostgresBroker.publish` replaced by a no-op (this module's
   `serve --no-notify`, a bench-only switch: no setting in chatql turns NOTIFY off).
3. **A stalled listener**: one process LISTENs and is then stopped (SIGSTOP, as a process
   whose event loop hangs); NOTIFY transactions run at full speed while
   `pg_notification_queue_usage()` is sampled; then the listener resumes and the queue drains.
   PostgreSQL's queue holds at most 8 GB; when it is full every NOTIFY transaction fails at
   commit, which for chatql means every `sendMessage` fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
CHANNEL = "chatql_messages"
# PostgreSQL's notification queue holds at most this much (8 GB; pg_notification_queue_usage()
# is the share of it in use).
QUEUE_BYTES = 8 * 1024**3
SECRET = "notify-bench-secret-key-long-enough-for-hs256"
PLAIN = """\
\\set c random(1, 1000)
BEGIN;
INSERT INTO notify_bench (conversation, content) VALUES (:c, 'hello');
COMMIT;
"""
WITH_NOTIFY = """\
\\set c random(1, 1000)
BEGIN;
INSERT INTO notify_bench (conversation, content) VALUES (:c, 'hello');
SELECT pg_notify('chatql_messages',
  'cb1bc6f0-2d5a-4b8e-9a57-1f3c8e2a4d70:' || currval('notify_bench_id_seq'));
COMMIT;
"""
LISTENER = """
import asyncio, sys
import asyncpg

async def main():
    connection = await asyncpg.connect(sys.argv[1])
    await connection.add_listener(sys.argv[2], lambda *_: None)
    if sys.argv[3] == "transaction":
        # Idle in a transaction: PostgreSQL delivers nothing to it until the transaction ends.
        await connection.execute("BEGIN; SELECT 1")
    print("listening", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def pgbench(
    args: argparse.Namespace, script: str, *, clients: int, seconds: float, sync: bool
) -> float:
    """Transactions per second (pgbench's own figure, without connection time)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "script.sql"
        path.write_text(script)
        result = subprocess.run(
            [
                str(Path(args.pg_bin) / "pgbench"),
                "-n",
                f"-c{clients}",
                f"-j{min(clients, 2)}",
                f"-T{max(1, round(seconds))}",
                "-f",
                str(path),
                "-h",
                "127.0.0.1",
                "-p",
                str(args.port),
                "-U",
                "postgres",
                "postgres",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PGOPTIONS": f"-c synchronous_commit={'on' if sync else 'off'}"},
        )
    found = re.search(r"tps = ([0-9.]+)", result.stdout)
    if found is None:
        raise RuntimeError(f"no tps in pgbench's output: {result.stdout}")
    return float(found.group(1))


def sql_alone(args: argparse.Namespace) -> list[str]:
    rows = []
    for sync in (True, False):
        for clients in (1, 8, 32):
            plain: list[float] = []
            notify: list[float] = []
            for _ in range(args.rounds):
                plain.append(pgbench(args, PLAIN, clients=clients, seconds=args.seconds, sync=sync))
                notify.append(
                    pgbench(args, WITH_NOTIFY, clients=clients, seconds=args.seconds, sync=sync)
                )
            p, n = statistics.median(plain), statistics.median(notify)
            rows.append(
                f"| synchronous_commit={'on' if sync else 'off'} | {clients} | {p:,.0f} | "
                f"{n:,.0f} | {n / p:.2f} |"
            )
            print(rows[-1], flush=True)
    return rows


# ---- through chatql --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(args: argparse.Namespace, *, notify: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "bench.notify", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, *([] if notify else ["--no-notify"])],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{args.port}/postgres",
            "CHATQL_SECRET_KEY": SECRET,
            "CHATQL_LOG_LEVEL": "WARNING",
            "CHATQL_SIGNUPS_PER_ADDRESS": "1000",
        },
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz").status_code == 200:
                return process, base
        time.sleep(0.1)
    raise RuntimeError("chatql did not start")


async def call(client: httpx.AsyncClient, query: str, variables: Any, token: str = "") -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    body = response.json()
    if "errors" in body:
        raise RuntimeError(body["errors"])
    return body["data"]


async def sends_per_second(base: str, *, clients: int, seconds: float, tag: str) -> float:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        data = await call(
            client,
            "mutation ($i: SignUpInput!) { signUp(input: $i) { token } }",
            {"i": {"username": tag, "email": f"{tag}@example.com", "password": "notify-bench"}},
        )
        token = data["signUp"]["token"]
        conversations = [
            (
                await call(
                    client,
                    'mutation { createConversation(input: {title: "n"}) { id } }',
                    {},
                    token,
                )
            )["createConversation"]["id"]
            for _ in range(clients)
        ]
        done = 0
        ends = time.monotonic() + seconds

        async def sender(conversation: str) -> None:
            nonlocal done
            while time.monotonic() < ends:
                await call(
                    client,
                    "mutation ($c: ID!) { sendMessage(input: {conversationId: $c, "
                    'content: "hello"}) { id } }',
                    {"c": conversation},
                    token,
                )
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(sender(conversation) for conversation in conversations))
        return done / (time.monotonic() - started)


async def commit_mode(port: int, *, sync: bool) -> None:
    """The database's default for new sessions (chatql's servers are started after this)."""
    connection = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    try:
        await connection.execute(
            f"ALTER DATABASE postgres SET synchronous_commit TO {'on' if sync else 'off'}"
        )
    finally:
        await connection.close()


def through_chatql(args: argparse.Namespace, *, sync: bool) -> list[str]:
    asyncio.run(commit_mode(args.port, sync=sync))
    servers = {notify: start_server(args, notify=notify) for notify in (True, False)}
    rates: dict[bool, list[float]] = {True: [], False: []}
    try:
        for round_ in range(args.rounds):
            for notify in (True, False) if round_ % 2 == 0 else (False, True):
                base = servers[notify][1]
                tag = f"n{int(notify)}s{int(sync)}r{round_}x{os.getpid()}"
                rates[notify].append(
                    asyncio.run(
                        sends_per_second(base, clients=args.clients, seconds=args.seconds, tag=tag)
                    )
                )
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(30)
    with_n, without = statistics.median(rates[True]), statistics.median(rates[False])
    return [
        f"| synchronous_commit={'on' if sync else 'off'} | {args.clients} | {without:,.0f} | "
        f"{with_n:,.0f} | {with_n / without:.2f} |"
    ]


# ---- a stalled listener -----------------------------------------------------------------


STALLS = {
    "stop": "the listening process stopped (SIGSTOP)",
    "transaction": "the listening connection idle in a transaction",
}


async def stalled(args: argparse.Namespace, mode: str) -> list[str]:
    """NOTIFY at full speed (8 clients, synchronous_commit=off) while one listener stalls."""
    dsn = f"postgresql://postgres@127.0.0.1:{args.port}/postgres"
    listener = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LISTENER, dsn, CHANNEL, mode, stdout=subprocess.PIPE
    )
    assert listener.stdout is not None
    await listener.stdout.readline()
    monitor = await asyncpg.connect(dsn)
    try:
        first = await monitor.fetchval("SELECT count(*) FROM notify_bench")
        if mode == "stop":
            os.kill(listener.pid, signal.SIGSTOP)
        stalled_at = time.monotonic()
        load = asyncio.create_task(
            asyncio.to_thread(
                pgbench, args, WITH_NOTIFY, clients=8, seconds=args.stall_seconds, sync=False
            )
        )
        samples = []
        while not load.done():
            usage = await monitor.fetchval("SELECT pg_notification_queue_usage()")
            sent = await monitor.fetchval("SELECT count(*) FROM notify_bench") - first
            samples.append((time.monotonic() - stalled_at, sent, usage))
            await asyncio.sleep(1)
        rate = await load
        usage = await monitor.fetchval("SELECT pg_notification_queue_usage()")
        sent = await monitor.fetchval("SELECT count(*) FROM notify_bench") - first
        resumed = time.monotonic()
        if mode == "stop":
            os.kill(listener.pid, signal.SIGCONT)
        else:
            listener.terminate()  # its backend ends, and with it the transaction
        while await monitor.fetchval("SELECT pg_notification_queue_usage()") > 0:
            if time.monotonic() - resumed > 120:
                break
            await asyncio.sleep(0.1)
        drained = time.monotonic() - resumed
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(listener.pid, signal.SIGCONT)
            listener.terminate()
        await listener.wait()
        await monitor.close()
    queue_bytes = usage * QUEUE_BYTES
    per_notification = queue_bytes / sent if sent else float("nan")
    full_after = args.stall_seconds / usage if usage else float("inf")
    shown = samples[:: max(1, len(samples) // 5)]
    return [
        f"| {STALLS[mode]} | {args.stall_seconds:.0f} s | {sent:,} ({rate:,.0f}/s) | "
        f"{usage:.6f} ({queue_bytes / 1024**2:,.1f} MB, ~{per_notification:.0f} B each) | "
        f"{full_after / 3600:,.1f} h | {drained:.1f} s | "
        + ", ".join(f"{t:.0f} s: {n:,} / {u:.6f}" for t, n, u in shown)
        + " |"
    ]


async def prepare(port: int) -> None:
    connection = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    try:
        await connection.execute(
            "DROP TABLE IF EXISTS notify_bench; CREATE TABLE notify_bench "
            "(id bigserial PRIMARY KEY, conversation int NOT NULL, content text NOT NULL)"
        )
    finally:
        await connection.close()


def serve(argv: list[str]) -> int:
    """chatql's `serve` in this process (one worker), NOTIFY optionally replaced by nothing."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", required=True)
    parser.add_argument("--no-notify", action="store_true")
    options = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import server
    from realtime.postgres import PostgresBroker

    if options.no_notify:

        async def publish(*_: Any, **__: Any) -> None:
            return None

        PostgresBroker.publish = publish  # type: ignore[method-assign]
    return server.main(["serve", "--port", options.port, "--workers", "1"])


def main() -> int:
    if sys.argv[1:2] == ["serve"]:
        return serve(sys.argv[2:])
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pg-bin", required=True)
    parser.add_argument("--port", type=int, required=True, help="the throwaway PostgreSQL's")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stall-seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=8, help="chatql's senders")
    parser.add_argument("--only", default="sql,chatql,stall", help="parts to run")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "notify-latest.md"))
    args = parser.parse_args()
    asyncio.run(prepare(args.port))
    head = [
        f"### NOTIFY run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Machine: {os.cpu_count()} cores, shared with other work; PostgreSQL with fsync on "
        f"(ext4); Python {platform.python_version()}. Command: `bench/notify "
        f"{' '.join(sys.argv[5:])}`. Medians of {args.rounds} interleaved rounds of "
        f"{args.seconds:.0f} s. Transactions (or sends) per second:",
        "",
        "| | clients | without NOTIFY | with NOTIFY | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    parts = set(args.only.split(","))
    text = list(head)
    if "sql" in parts:
        text += sql_alone(args)
    if "chatql" in parts:
        text += [
            "",
            "Through chatql (`sendMessage`, one worker; NOTIFY off is the bench-only switch):",
            "",
            "| | clients | sends/s without NOTIFY | sends/s with NOTIFY | ratio |",
            "|---|---:|---:|---:|---:|",
        ]
        for sync in (True, False):
            text += through_chatql(args, sync=sync)
            print(text[-1], flush=True)
        asyncio.run(commit_mode(args.port, sync=False))
    if "stall" in parts:
        text += [
            "",
            "A stalled listener (NOTIFY by 8 pgbench clients, `synchronous_commit=off`; queue "
            "usage is the share of PostgreSQL's 8 GB queue):",
            "",
            "| stall | for | NOTIFY transactions meanwhile | queue usage then | full (every NOTIFY "
            "fails) after, at that rate | drained after the stall ends | samples: sent / usage |",
            "|---|---:|---:|---|---:|---:|---|",
        ]
        for mode in STALLS:
            text += asyncio.run(stalled(args, mode))
            print(text[-1], flush=True)
    report = "\n".join(text)
    print("\n" + report)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
