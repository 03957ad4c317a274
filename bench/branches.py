"""Issue 15's branches benchmark: Q2 (the newest 50 messages of one conversation, with cursors
and `pageInfo`) on a branched conversation against Q2 on a linear one of the same length
(target: the ratio of their req/s at least 0.8).

Both conversations have 2,000 messages on their active branch; the branched one also has 40
branch points, each an alternative branch of 5 messages off the active branch, written among
the newest page's times (a page scan that had to step over them would pay for them: the
partial index `ix_messages_branch` never holds them). Seeded with set-based SQL; interleaved
rounds of wrk against one chatql worker; medians of the rounds.

    .venv/bin/python bench/branches.py --dsn postgresql://postgres@127.0.0.1:5432/chatql_bench
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import secrets
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sqlalchemy import text

from bench.run import PASSWORD, ROOT, Sample, Server, body, graphql, wrk
from bench.workloads import Q2
from db.engine import make_engine

MESSAGES = 2000
BRANCH_POINTS = 40
BRANCH_LENGTH = 5

LINEAR = """
INSERT INTO messages (conversation_id, role, content, created_at)
SELECT :c, CASE WHEN i % 2 = 0 THEN 'USER' ELSE 'ASSISTANT' END,
       'message ' || i || ' ' || repeat('lorem ipsum ', 20),
       timestamptz '2026-01-01' + i * interval '1 second'
FROM generate_series(0, :n - 1) AS i
"""
LINK = """
UPDATE messages SET parent_id = p.previous FROM (
  SELECT id, lag(id) OVER (ORDER BY created_at, id) AS previous
  FROM messages WHERE conversation_id = :c
) AS p WHERE messages.id = p.id
"""
LEAF = """
UPDATE conversations SET current_leaf_id = (
  SELECT id FROM messages WHERE conversation_id = :c ORDER BY created_at DESC, id DESC LIMIT 1
) WHERE id = :c
"""
# Branch k hangs off the active branch's message k * 50; its messages chain off each other.
BRANCHES = """
WITH points AS (
  SELECT id, row_number() OVER (ORDER BY created_at, id) - 1 AS place
  FROM messages WHERE conversation_id = :c AND on_branch
)
INSERT INTO messages (conversation_id, role, content, created_at, parent_id, on_branch)
SELECT :c, 'ASSISTANT', 'alternative ' || k || '.' || j,
       timestamptz '2026-01-01' + (:n - 10) * interval '1 second'
         + (k * :length + j) * interval '1 millisecond',
       CASE WHEN j = 0 THEN (SELECT id FROM points WHERE place = k * 50) END, false
FROM generate_series(0, :points - 1) AS k, generate_series(0, :length - 1) AS j
ORDER BY k, j
"""
CHAIN = """
UPDATE messages SET parent_id = p.previous FROM (
  SELECT id, lag(id) OVER (PARTITION BY split_part(content, '.', 1) ORDER BY id) AS previous
  FROM messages WHERE conversation_id = :c AND NOT on_branch
) AS p WHERE messages.id = p.id AND p.previous IS NOT NULL
"""


async def seed(dsn: str, linear: str, branched: str) -> None:
    engine = make_engine(dsn)
    try:
        async with engine.begin() as connection:
            for conversation in (linear, branched):
                values = {"c": conversation, "n": MESSAGES}
                await connection.execute(text(LINEAR), values)
                await connection.execute(text(LINK), {"c": conversation})
                await connection.execute(text(LEAF), {"c": conversation})
            values = {"c": branched, "n": MESSAGES, "points": BRANCH_POINTS}
            await connection.execute(text(BRANCHES), {**values, "length": BRANCH_LENGTH})
            await connection.execute(text(CHAIN), {"c": branched})
            await connection.execute(text("ANALYZE messages"))
    finally:
        await engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True, help="postgresql://user@host:port/db")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "branches.md"))
    args = parser.parse_args()

    dsn = args.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    server = Server(dsn, 1, {})
    samples: dict[str, list[Sample]] = {}
    try:
        name = f"branches-{secrets.token_hex(4)}"
        token = graphql(
            server.url,
            "mutation($u: String!, $e: String!, $p: String!) { signUp(input: "
            "{username: $u, email: $e, password: $p}) { token } }",
            {"u": name, "e": f"{name}@example.com", "p": PASSWORD},
            None,
        )["data"]["signUp"]["token"]
        ids = {}
        for kind in ("linear", "branched"):
            made = graphql(
                server.url,
                "mutation($t: String!) { createConversation(input: {title: $t}) { id } }",
                {"t": kind},
                token,
            )
            ids[kind] = made["data"]["createConversation"]["id"]
        raw = {kind: _conversation_key(global_id) for kind, global_id in ids.items()}
        asyncio.run(seed(dsn, raw["linear"], raw["branched"]))
        answers = {
            kind: graphql(server.url, Q2, {"id": global_id}, token)
            for kind, global_id in ids.items()
        }
        pages = {
            kind: [e["node"]["content"] for e in a["data"]["conversation"]["messages"]["edges"]]
            for kind, a in answers.items()
        }
        assert pages["linear"] == pages["branched"] and len(pages["linear"]) == 50, answers
        for round_number in range(args.rounds):
            for kind, global_id in ids.items():
                sample = wrk(
                    server.url,
                    bodies=[body(Q2, {"id": global_id})],
                    tokens=[token],
                    connections=args.connections,
                    threads=min(args.connections, 2),
                    seconds=args.seconds,
                    check='"edges":[{',
                )
                samples.setdefault(kind, []).append(sample)
                print(
                    f"round {round_number + 1} {kind}: "
                    f"{sample.requests / sample.seconds:.1f} req/s, p50 {sample.p50_ms:.2f} ms",
                    flush=True,
                )
    finally:
        server.stop()
    table = render(args, samples)
    print(table)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table)
    return 0


def _conversation_key(global_id: str) -> str:
    from schema.relay import parse_global_id

    parsed = parse_global_id(global_id)
    assert parsed is not None and parsed[0] == "Conversation"
    return str(parsed[1])


def render(args: argparse.Namespace, samples: dict[str, list[Sample]]) -> str:
    rate = {
        name: statistics.median(s.requests / s.seconds for s in runs)
        for name, runs in samples.items()
    }
    base = rate["linear"]
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}. `bench/branches.py --rounds {args.rounds} --seconds "
        f"{args.seconds:g}`, {args.connections} connections, 1 worker; medians. Q2 on "
        f"{MESSAGES:,} messages; the branched conversation has {BRANCH_POINTS} branch points "
        f"of {BRANCH_LENGTH} messages each off the active branch.",
        "",
        "| Q2 on | req/s | p50 ms | p99 ms | errors | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, runs in samples.items():
        lines.append(
            f"| {name} | {rate[name]:.1f} | {statistics.median(s.p50_ms for s in runs):.2f} "
            f"| {statistics.median(s.p99_ms for s in runs):.2f} "
            f"| {sum(s.errors for s in runs)} | {rate[name] / base:.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
