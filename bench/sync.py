"""The sync benchmarks of issue 13 (run by `bench/sync`, which starts a throwaway PostgreSQL).

C1, catch-up: user2 missed `--changes` changes (10,000 MESSAGE_ADDED, recorded by
`db.changes.record` for the seeded messages, 100 a transaction as sends would); a phone pages
through them with `changes(first: 100, after:)` selecting `conversation { id title }` and
`message { id content }`, one request after the other. Reported: changes/s (median of
`--rounds` full catch-ups) beside one hand-written SQL statement that reads the same rows
(position, kind, time, conversation id and title, message id and content) as one JSON document
(pgbench, one client, like the bench's lean limit), and their ratio. The answers are checked
against the database first: every change once, in order, with its title and content.

Feed size: `pg_total_relation_size` of `changes` (table, primary key and `ix_changes_at`)
after `--prune-changes` changes (1,000 users x 1,000, bulk-inserted with the rows `record`
writes, then VACUUM ANALYZE), per million changes.

Retention: `db.retention`'s batches (`_prune_batch` in a `write_transaction` each, the loop of
`prune_changes`) prune all of them; reported: seconds, batches, statements (pg_stat_statements,
BEGIN/COMMIT included) and the longest batch, which is the longest any lock is held (a batch's
row locks on `changes` and `feeds` last until its commit).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import PASSWORD, Database, Server, graphql, pgbench
from db.changes import ChangeKind, NewChange, record
from db.engine import make_engine, make_sessionmaker, write_transaction
from db.retention import BATCH_SIZE, _prune_batch

C1 = """query C1($after: String) {
  changes(first: 100, after: $after) {
    edges { cursor node { cursor kind at conversationId messageId
      conversation { id title } message { id content } } }
    pageInfo { hasNextPage endCursor }
  }
}"""

# The same rows as one JSON document: the lean way (arrays, raw ids, PostgreSQL's own output).
C1_SQL = """
SELECT json_agg(json_build_array(c.position, c.kind, c.at, c.conversation_id, v.title,
                                 c.message_id, m.content) ORDER BY c.position)
FROM changes c
LEFT JOIN conversations v ON v.id = c.conversation_id AND v.user_id = c.user_id
LEFT JOIN messages m ON m.id = c.message_id AND m.conversation_id = c.conversation_id
WHERE c.user_id = {user} AND c.position > 0
"""


async def record_changes(database_url: str, username: str, count: int) -> int:
    """Records one MESSAGE_ADDED per message of `username` (up to `count`), 100 a
    transaction; returns the user's id."""
    engine = make_engine(database_url, pre_ping=False)
    sessionmaker = make_sessionmaker(engine)
    try:
        async with engine.connect() as connection:
            user = (
                await connection.execute(
                    text("SELECT id FROM users WHERE username = :u"), {"u": username}
                )
            ).scalar_one()
            rows = (
                await connection.execute(
                    text(
                        "SELECT m.conversation_id, m.id FROM messages m JOIN conversations c "
                        "ON c.id = m.conversation_id WHERE c.user_id = :u "
                        "ORDER BY m.created_at, m.id LIMIT :n"
                    ),
                    {"u": user, "n": count},
                )
            ).all()
        if len(rows) < count:
            raise SystemExit(f"{username} has {len(rows)} messages, fewer than {count}")
        for start in range(0, count, 100):
            items = [
                NewChange(user, ChangeKind.MESSAGE_ADDED, conversation, message)
                for conversation, message in rows[start : start + 100]
            ]
            async with write_transaction(sessionmaker) as session:
                await record(session, items)
        return int(user)
    finally:
        await engine.dispose()


def gid_key(gid: str) -> str:
    return base64.b64decode(gid).decode().split(":", 1)[1]


def catch_up(url: str, token: str) -> list[Any]:
    """One full catch-up: every page, in order; returns the changes."""
    after: str | None = None
    seen: list[Any] = []
    while True:
        answer = graphql(url, C1, {"after": after}, token)
        if "errors" in answer:
            raise SystemExit(f"C1 answered errors: {answer['errors'][:2]}")
        page = answer["data"]["changes"]
        seen += [edge["node"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return seen
        after = page["pageInfo"]["endCursor"]


def check(changes: list[Any], rows: list[Any]) -> None:
    """chatql's catch-up equals the SQL statement's rows, change by change."""
    if len(changes) != len(rows):
        raise SystemExit(f"C1: {len(changes)} changes, the database has {len(rows)}")
    for number, (change, row) in enumerate(zip(changes, rows, strict=True)):
        position, kind, _, conversation, title, message, content = row
        ours = (
            change["kind"],
            gid_key(change["conversationId"]),
            change["conversation"]["title"],
            int(gid_key(change["messageId"])),
            change["message"]["content"],
        )
        if ours != (kind, conversation, title, message, content) or position != number + 1:
            raise SystemExit(f"C1: change {number + 1} differs: {ours} != {row}")


async def statements(dsn: str) -> list[tuple[int, str]]:
    """(calls, first words of the statement) run in this database since the last reset, most
    called first."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT query, calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = current_database() ORDER BY calls DESC"
        )
        return [
            (int(row["calls"]), " ".join(row["query"].split())[:60])
            for row in rows
            if "pg_stat_statements" not in row["query"]
        ]
    finally:
        await connection.close()


async def bulk_users(dsn: str, users: int) -> int:
    """`users` more users (copies of user2); returns the first one's id."""
    connection = await asyncpg.connect(dsn)
    try:
        first = int(await connection.fetchval("SELECT max(id) FROM users")) + 1
        await connection.execute(
            """
            INSERT INTO users (id, username, email, full_name, username_key, email_key,
                               full_name_key, account_key, hashed_password, is_active, is_admin,
                               created_at, updated_at)
            SELECT $1 + g, 'bulk' || g, 'bulk' || g || '@example.com', NULL, 'bulk' || g,
                   'bulk' || g || '@example.com', NULL, md5(g::text), u.hashed_password, true,
                   false, now(), now()
            FROM users u, generate_series(0, $2 - 1) AS g WHERE u.username = 'user2'
            """,
            first,
            users,
        )
        return first
    finally:
        await connection.close()


async def bulk_changes(
    dsn: str, first: int, users: int, per_user: int, interleaved: bool
) -> tuple[int, int]:
    """Users `first` .. `first + users - 1` get changes 1 .. `per_user` (their feeds restarted),
    about a day old, as `record` writes them: one user's after the other's (`interleaved`
    false: a batch of the oldest 1,000 is one user's), or round robin (a batch of the oldest
    is every user's next change, as when many users are active at once). Returns (changes in
    the table, bytes of `changes` with its indexes) after VACUUM ANALYZE."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("DELETE FROM feeds WHERE user_id >= $1", first)
        await connection.execute("DELETE FROM changes WHERE user_id >= $1", first)
        order = "(g - 1) * $2 + (u - $1)" if interleaved else "(u - $1) * $3 + g"
        await connection.execute(
            f"""
            INSERT INTO changes (user_id, position, kind, conversation_id, message_id, at)
            SELECT u, g, 'MESSAGE_ADDED', md5(u::text), g,
                   now() - interval '1 day' + ({order}) * interval '1 millisecond'
            FROM generate_series($1::int, $1::int + $2 - 1) AS u,
                 generate_series(1, $3) AS g
            ORDER BY 1, 2
            """,
            first,
            users,
            per_user,
        )
        await connection.execute(
            "INSERT INTO feeds (user_id, head, pruned_through) "
            "SELECT u, $3, 0 FROM generate_series($1::int, $1::int + $2 - 1) AS u",
            first,
            users,
            per_user,
        )
        await connection.execute("VACUUM ANALYZE changes")
        await connection.execute("VACUUM ANALYZE feeds")
        count = await connection.fetchval("SELECT count(*) FROM changes")
        size = await connection.fetchval("SELECT pg_total_relation_size('changes')")
        return int(count), int(size)
    finally:
        await connection.close()


async def prune(
    database_url: str, dsn: str, max_seconds: float
) -> tuple[dict[str, float], list[tuple[int, str]]]:
    """Prunes every change older than an hour, batch by batch as `prune_changes` does, or
    stops after `max_seconds`."""
    engine = make_engine(database_url, pre_ping=False)
    sessionmaker = make_sessionmaker(engine)
    cutoff = datetime.now(UTC) - timedelta(hours=1)
    connection = await asyncpg.connect(dsn)
    await connection.execute("SELECT pg_stat_statements_reset()")
    longest, batches, total = 0.0, 0, 0
    started = time.perf_counter()
    try:
        while True:
            begun = time.perf_counter()
            async with write_transaction(sessionmaker) as session:
                count = await _prune_batch(session, cutoff, BATCH_SIZE)
            if count == 0:
                break
            longest = max(longest, time.perf_counter() - begun)
            batches += 1
            total += count
            if time.perf_counter() - started > max_seconds:
                break
        seconds = time.perf_counter() - started
        counted = await statements(dsn)
        left = await connection.fetchval("SELECT count(*) FROM changes WHERE at < $1", cutoff)
    finally:
        await connection.close()
        await engine.dispose()
    return {
        "pruned": total,
        "left": int(left),
        "seconds": seconds,
        "batches": batches,
        "statements": sum(calls for calls, _ in counted),
        "longest_ms": longest * 1000,
    }, counted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True, help="postgresql://user@host:port/db (libpq)")
    parser.add_argument("--pg-bin", required=True)
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sql-seconds", type=float, default=10.0)
    parser.add_argument("--prune-users", type=int, default=1000)
    parser.add_argument("--prune-per-user", type=int, default=1000)
    parser.add_argument(
        "--prune-seconds", type=float, default=60.0, help="stop pruning after (per layout)"
    )
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    host, port, name = args.dsn.rsplit("@", 1)[1].replace("/", ":").split(":")
    user_part = args.dsn.split("//", 1)[1].split("@", 1)[0]
    parts = {"user": user_part, "host": host, "port": port, "database": name}
    database_url = args.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    database = Database(args.dsn, name)
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    user = asyncio.run(record_changes(database_url, "user2", args.changes))
    sql = C1_SQL.format(user=user)
    rows = json.loads(database.fetch(sql)[0][0])
    server = Server(database_url, 1, {})
    try:
        token = graphql(
            server.url,
            "mutation($l: String!, $p: String!) { logIn(input: {login: $l, password: $p}) "
            "{ token } }",
            {"l": "user2", "p": PASSWORD},
            None,
        )["data"]["logIn"]["token"]
        check(catch_up(server.url, token), rows)  # and a warm-up
        times, cpu = [], []
        for _ in range(args.rounds):
            before = server.cpu_seconds()
            started = time.perf_counter()
            catch_up(server.url, token)
            times.append(time.perf_counter() - started)
            cpu.append(server.cpu_seconds() - before)
    finally:
        server.stop()
    ours = args.changes / statistics.median(times)
    limit = pgbench(args.pg_bin, parts, sql, clients=1, threads=1, seconds=args.sql_seconds)
    theirs = args.changes * limit.rate
    say(
        f"Machine: {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. "
        f"Command: `bench/sync` ({' '.join(sys.argv[1:]) or 'defaults'})."
    )
    say("")
    say(f"C1: {args.changes:,} changes in pages of 100, one client, median of {args.rounds}:")
    say(
        f"- chatql: {ours:,.0f} changes/s ({statistics.median(times):.2f} s a catch-up, "
        f"{1000 * statistics.median(cpu) / (args.changes / 100):.1f} ms server CPU a page)"
    )
    say(
        f"- one SQL statement (pgbench -c1, {limit.requests} runs): {theirs:,.0f} changes/s "
        f"({1000 / max(limit.rate, 1e-9):.1f} ms for all {args.changes:,})"
    )
    say(f"- ratio chatql / SQL: {ours / theirs:.3f}")

    first = asyncio.run(bulk_users(args.dsn, args.prune_users))
    for interleaved in (False, True):
        count, size = asyncio.run(
            bulk_changes(args.dsn, first, args.prune_users, args.prune_per_user, interleaved)
        )
        layout = (
            f"{args.prune_users:,} users' changes round robin in time (a batch spans many users)"
            if interleaved
            else f"{args.prune_users:,} users' changes one user after the other in time"
        )
        say("")
        say(f"{layout}:")
        say(
            f"- feed size: {count:,} changes take {size / 2**20:.1f} MiB (table and indexes): "
            f"{size / 2**20 * 1_000_000 / count:.1f} MiB per million changes "
            f"({size / count:.0f} bytes a change)"
        )
        result, counted = asyncio.run(prune(database_url, args.dsn, args.prune_seconds))
        pruned = result["pruned"]
        say(
            f"- retention: {int(pruned):,} changes pruned in {result['seconds']:.1f} s "
            f"({pruned / result['seconds']:,.0f}/s; a million in "
            f"{result['seconds'] * 1_000_000 / max(pruned, 1):,.0f} s), "
            f"{int(result['batches']):,} batches of up to {BATCH_SIZE:,}, "
            f"{int(result['statements']):,} statements "
            f"({result['statements'] / max(result['batches'], 1):.1f} a batch, BEGIN/COMMIT "
            f"included); longest batch (the longest a lock is held) "
            f"{result['longest_ms']:,.0f} ms; {int(result['left']):,} older than the cutoff "
            f"left{' (stopped at the time limit)' if result['left'] else ''}"
        )
        say("- its statements, by calls: " + "; ".join(f"{c:,} `{q}`" for c, q in counted))
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
