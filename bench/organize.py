"""Issue 16's list benchmark: the phone's conversation list with `unreadCount` against the
same list without it (target: the ratio of their req/s at least 0.8).

Both lists are the first 20 conversations of one user with `title pinned archived tags
lastMessage { content createdAt }`; one asks `unreadCount` too, which costs one statement
more (`Loaders.unread_count_by_conversation`, one count over the 20 conversations' messages).
Interleaved rounds of wrk against one chatql worker; medians of the rounds.

Run it on a seeded database (`python server.py seed`; `bench/search` seeds one the same way):

    .venv/bin/python bench/organize.py --dsn postgresql://postgres@127.0.0.1:5432/chatql_bench
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import PASSWORD, ROOT, Sample, Server, body, graphql, wrk

FIELDS = "title pinned archived tags lastMessage { content createdAt }"
LIST = "{ me { conversations(first: 20) { edges { node { %s } } } } }"
LISTS = {
    "without unreadCount": LIST % FIELDS,
    "with unreadCount": LIST % f"{FIELDS} unreadCount",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True, help="postgresql://user@host:port/db")
    parser.add_argument("--user", default="user2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "organize.md"))
    args = parser.parse_args()

    server = Server(args.dsn.replace("postgresql://", "postgresql+asyncpg://", 1), 1, {})
    samples: dict[str, list[Sample]] = {}
    try:
        token = graphql(
            server.url,
            "mutation($l: String!, $p: String!) { logIn(input: {login: $l, password: $p}) "
            "{ token } }",
            {"l": args.user, "p": PASSWORD},
            None,
        )["data"]["logIn"]["token"]
        for query in LISTS.values():
            answer = graphql(server.url, query, {}, token)
            assert "errors" not in answer and answer["data"]["me"]["conversations"]["edges"], answer
        for round_number in range(args.rounds):
            for name, query in LISTS.items():
                sample = wrk(
                    server.url,
                    bodies=[body(query, {})],
                    tokens=[token],
                    connections=args.connections,
                    threads=min(args.connections, 2),
                    seconds=args.seconds,
                    check='"edges":[{',
                )
                samples.setdefault(name, []).append(sample)
                print(
                    f"round {round_number + 1} {name}: "
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


def render(args: argparse.Namespace, samples: dict[str, list[Sample]]) -> str:
    rate = {
        name: statistics.median(s.requests / s.seconds for s in runs)
        for name, runs in samples.items()
    }
    base = rate["without unreadCount"]
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}. `bench/organize.py --rounds {args.rounds} --seconds "
        f"{args.seconds:g}` as {args.user}, {args.connections} connections, 1 worker; medians.",
        "",
        "| list of 20 conversations | req/s | p50 ms | p99 ms | errors | ratio |",
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
