"""F1 of issue 16: `searchMessages` against the limit, PostgreSQL running the same statement.

Two workloads, each the first page of 20 hits of one user's messages: a two-word query and a
phrase. Per workload, in interleaved rounds: chatql (one worker) under load (wrk, 4
connections) and with one client, and the limit, pgbench running the very statement chatql
sends (`db.search.search_statement`, compiled with its values), likewise. The limit returns
rows; chatql also writes snippets and highlights and the JSON answer.

Run it on a seeded database (`bench/search` does it all: a throwaway PostgreSQL, 1,000 users
x 20 conversations x 50 messages, then this), or on any with `--dsn`:

    .venv/bin/python bench/search.py --dsn postgresql://postgres@127.0.0.1:5432/chatql_bench \\
        --pg-bin /usr/lib/postgresql/15/bin
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.dialects import postgresql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import PASSWORD, ROOT, Database, Sample, Server, body, graphql, pgbench, wrk
from db.search import parse_query, search_statement

SEARCH = (
    "query Search($q: String!) { searchMessages(query: $q, first: 20) { edges { cursor "
    "node { message { id content createdAt } snippet highlights { start length } } } "
    "pageInfo { hasNextPage endCursor } } }"
)
# Of the seed's vocabulary (db/seed.py): user2 has 19 messages with both words, 6 with the phrase.
WORKLOADS = {"F1 two words": "water people", "F1 phrase": '"name help"'}


def limit_sql(query: str, owner_id: int) -> str:
    statement = search_statement(
        "postgresql", query=parse_query(query), owner_id=owner_id, first=20
    )
    compiled = statement.compile(
        dialect=postgresql.dialect(),  # type: ignore[no-untyped-call]
        compile_kwargs={"literal_binds": True},
    )
    return str(compiled)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True, help="postgresql://user@host:port/db (libpq)")
    parser.add_argument("--pg-bin", required=True)
    parser.add_argument("--user", default="user2", help="whose messages are searched")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="per loaded run")
    parser.add_argument("--single-seconds", type=float, default=3.0, help="per one-client run")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "search.md"))
    args = parser.parse_args()

    match = re.fullmatch(r"postgresql://(\w+)@([\w.]+):(\d+)/(\w+)", args.dsn)
    if not match:
        raise SystemExit("--dsn must look like postgresql://user@host:port/db")
    parts = dict(zip(("user", "host", "port", "database"), match.groups(), strict=True))
    database = Database(args.dsn, parts["database"])
    owner_id = int(database.fetch("SELECT id FROM users WHERE username = $1", args.user)[0][0])
    server = Server(args.dsn.replace("postgresql://", "postgresql+asyncpg://", 1), 1, {})
    samples: dict[tuple[str, str], list[Sample]] = {}
    cpu: dict[str, list[float]] = {}  # chatql's server CPU ms a request, under load
    try:
        token = graphql(
            server.url,
            "mutation($l: String!, $p: String!) { logIn(input: {login: $l, password: $p}) "
            "{ token } }",
            {"l": args.user, "p": PASSWORD},
            None,
        )["data"]["logIn"]["token"]
        sizes = {}
        for name, query in WORKLOADS.items():
            answer = graphql(server.url, SEARCH, {"q": query}, token)
            assert "errors" not in answer, answer
            hits = [e["node"]["message"]["id"] for e in answer["data"]["searchMessages"]["edges"]]
            rows = database.fetch(limit_sql(query, owner_id))
            assert len(hits) == min(20, len(rows)) and hits, (name, len(hits), len(rows))
            sizes[name] = len(hits)
        print(f"answers checked: {sizes} hits on the first page", flush=True)
        for round_number in range(args.rounds):
            for name, query in WORKLOADS.items():
                bodies = [body(SEARCH, {"q": query})]
                sql = limit_sql(query, owner_id)

                def chatql(connections: int, seconds: float, bodies: list[str] = bodies) -> Sample:
                    return wrk(
                        server.url,
                        bodies=bodies,
                        tokens=[token],
                        connections=connections,
                        threads=min(connections, 2),
                        seconds=seconds,
                        check='"edges":[{',
                    )

                def limit(connections: int, seconds: float, sql: str = sql) -> Sample:
                    return pgbench(
                        args.pg_bin,
                        parts,
                        sql,
                        clients=connections,
                        threads=min(connections, 2),
                        seconds=seconds,
                    )

                runs: dict[str, Callable[[int, float], Sample]] = {
                    "chatql, 1 worker": chatql,
                    "the limit (pgbench, the same SQL)": limit,
                }
                for label, run in runs.items():
                    before = server.cpu_seconds()
                    loaded = run(args.connections, args.seconds)
                    if label == "chatql, 1 worker":
                        used = (server.cpu_seconds() - before) / max(loaded.requests, 1)
                        cpu.setdefault(name, []).append(used * 1000)
                    single = run(1, args.single_seconds)
                    samples.setdefault((name, label), []).append(loaded)
                    samples.setdefault((name, label + " one-client"), []).append(single)
                    print(
                        f"round {round_number + 1} {name} {label}: "
                        f"{loaded.requests / loaded.seconds:.1f} req/s, "
                        f"one client p50 {single.p50_ms:.2f} ms",
                        flush=True,
                    )
    finally:
        server.stop()
    table = render(args, samples, cpu)
    print(table)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table)
    return 0


def render(
    args: argparse.Namespace,
    samples: dict[tuple[str, str], list[Sample]],
    cpu: dict[str, list[float]],
) -> str:
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}. `bench/search.py --rounds {args.rounds} --seconds "
        f"{args.seconds:g} --single-seconds {args.single_seconds:g}` as {args.user}; medians of "
        f"the rounds; {args.connections} connections, one-client latency from 1-connection runs.",
        "",
        "| workload | server | req/s | p50 ms | p99 ms | one-client p50 ms | errors "
        "| server CPU ms/req | ratio to the limit |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = ("chatql, 1 worker", "the limit (pgbench, the same SQL)")
    for name in WORKLOADS:
        rate = {
            label: statistics.median(s.requests / s.seconds for s in samples[(name, label)])
            for label in labels
        }
        for label in labels:
            loaded, single = samples[(name, label)], samples[(name, label + " one-client")]
            used = f"{statistics.median(cpu[name]):.2f}" if label == labels[0] else ""
            lines.append(
                f"| {name} | {label} | {rate[label]:.1f} "
                f"| {statistics.median(s.p50_ms for s in loaded):.2f} "
                f"| {statistics.median(s.p99_ms for s in loaded):.2f} "
                f"| {statistics.median(s.p50_ms for s in single):.2f} "
                f"| {sum(s.errors for s in loaded + single)} | {used} "
                f"| {rate[label] / rate[labels[1]]:.3f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
