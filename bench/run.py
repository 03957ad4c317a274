"""The benchmark driver; `bench/run` prepares PostgreSQL, the data and PostGraphile, then calls
this.

Starts chatql on loopback (one server per `--workers` value and per `--variant`, all alive at
once) and PostGraphile 4 (issue 14) on the same database, checks that every read workload's
answers carry the same data in all its forms (`check_answers`), then runs rounds: in each
round every workload once under load (wrk; pgbench for the lean and the exact limit) and once
with one client, so drift on a shared machine hits all of them alike. Per run it reads the
servers' and PostgreSQL's CPU time and the servers' peak RSS from /proc, and counts SQL
statements with pg_stat_statements. Prints a markdown table with chatql's ratios to each
anchor and writes it to `bench/results/latest.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.workloads import CHATQL, EXACT, LEAN, POSTGRAPHILE, READS, W1, Read

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-key-that-is-long-enough-for-hs256"
PASSWORD = "chatql-demo"
W1_CLIENTS = 8
W1_CONTENT = ("The quick brown fox jumps over the lazy dog while the bench keeps count. " * 3)[:200]
UTILITY = re.compile(
    r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|SET|RESET|SHOW|DISCARD)\b", re.I
)

WRK_SCRIPT = (Path(__file__).resolve().parent / "wrk.lua").read_text()


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid Lua string literal for our bodies


def lua_list(items: list[str]) -> str:
    return "{" + ", ".join(lua_string(item) for item in items) + "}"


@dataclass
class Sample:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float = 0.0
    pg_cpu_ms: float = 0.0
    statements: int = 0
    round_trips: int = 0
    errors: int = 0
    peak_rss_mb: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class Row:
    name: str
    server: str
    kind: str  # chatql, postgraphile, exact or lean (bench.workloads)
    loaded: list[Sample] = field(default_factory=list)
    single: list[Sample] = field(default_factory=list)

    def median(self, attribute: str, samples: list[Sample] | None = None) -> float:
        values = [float(getattr(sample, attribute)) for sample in (samples or self.loaded)]
        return statistics.median(values) if values else float("nan")

    def per_request(self, attribute: str) -> float:
        requests = sum(sample.requests for sample in self.loaded)
        return sum(float(getattr(s, attribute)) for s in self.loaded) / max(requests, 1)


# ---- the server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def descendants(root: int) -> list[int]:
    """`root` and every process below it (uvicorn's workers, PostgreSQL's backends)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: list[int], reaped: int | None = None) -> float:
    """utime+stime of `pids`, plus the CPU of the exited children that `reaped` has waited for
    (cutime+cstime: PostgreSQL's postmaster reaps its finished backends)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if pid == reaped:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / ticks


class Process:
    """A server under load: its process group, its CPU time and its peak memory."""

    process: subprocess.Popen[bytes]
    log: Any
    url: str
    lifetime_peak_mb: float

    def pids(self) -> list[int]:
        return descendants(self.process.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids())

    def wait_ready(self, url: str, data: bytes | None, what: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                request = urllib.request.Request(
                    url, data=data, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise SystemExit(f"{what} did not start (its log: {self.log.name})") from None
                time.sleep(0.2)
        raise SystemExit(f"{what} did not answer within 60 s (its log: {self.log.name})")

    def reset_peak_rss(self) -> None:
        """Start VmHWM afresh (Linux: 5 to clear_refs), so that the next reading is the peak of
        what ran in between, not of start-up (Argon2's dummy hash takes 64 MiB for a moment)."""
        self.lifetime_peak_mb = max(self.lifetime_peak_mb, self.peak_rss_mb())
        for pid in self.pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                continue

    def peak_rss_mb(self) -> float:
        """VmHWM of the process that serves (the largest one when there are several)."""
        peaks = [0]
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]))
            except OSError:
                continue
        return max(peaks) / 1024

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


class Server(Process):
    def __init__(
        self,
        database_url: str,
        workers: int,
        extra_env: dict[str, str],
        variant: str = "",
        tree: Path | None = None,
    ) -> None:
        """`tree`: run the chatql of that folder (an older commit's worktree, see `--variant`)
        instead of this one, on the same database; it is started without migrating."""
        self.workers = workers
        self.variant = variant
        self.tree = tree
        self.port = free_port()
        # The highest VmHWM read before any reset: the peak of the server's whole life.
        self.lifetime_peak_mb = 0.0
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "CHATQL_SECRET_KEY": SECRET,
            "CHATQL_LOG_LEVEL": "WARNING",
            **extra_env,
        }
        command = [sys.executable, "server.py", "serve", "--port", str(self.port)]
        command += ["--workers", str(workers)]
        if tree is not None:
            # The database is at this tree's newest revision, which an older tree's `serve`
            # would refuse to migrate from: start its app as `serve` would, without migrating.
            command = [sys.executable, "-m", "uvicorn", "server:serving_app", "--factory"]
            command += ["--port", str(self.port), "--no-access-log", "--log-level", "warning"]
        # Its log (clients that hang up when wrk stops, say) goes to a file, not the table.
        self.log = tempfile.NamedTemporaryFile(
            "w", prefix=f"chatql-bench-{workers}w-", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            command,
            cwd=tree or ROOT,
            env=env,
            start_new_session=True,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}/graphql"
        self.wait_ready(f"http://127.0.0.1:{self.port}/healthz", None, "chatql")


POSTGRAPHILE_DIR = ROOT / "bench" / "postgraphile"


def postgraphile_version() -> str:
    package = POSTGRAPHILE_DIR / "node_modules" / "postgraphile" / "package.json"
    version: str = json.loads(package.read_text())["version"]
    return version


class PostGraphile(Process):
    """PostGraphile 4 (`bench/postgraphile/package.json`, installed by `bench/run` with `npm
    ci`) on the bench's database, as its owner: no JWT, no roles, default mutations off, no
    GraphiQL, no query log, `NODE_ENV=production`; its default pool of 10 connections."""

    def __init__(self, dsn: str) -> None:
        self.port = free_port()
        self.lifetime_peak_mb = 0.0
        self.label = f"PostGraphile {postgraphile_version()}"
        self.log = tempfile.NamedTemporaryFile(
            "w", prefix="chatql-bench-postgraphile-", suffix=".log", delete=False
        )
        command = [str(POSTGRAPHILE_DIR / "node_modules" / ".bin" / "postgraphile")]
        command += ["--connection", dsn, "--schema", "public", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--disable-query-log", "--disable-graphiql"]
        command += ["--disable-default-mutations", "--legacy-relations", "omit"]
        self.process = subprocess.Popen(
            command,
            cwd=POSTGRAPHILE_DIR,
            env={**os.environ, "NODE_ENV": "production"},
            start_new_session=True,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}/graphql"
        self.wait_ready(self.url, b'{"query":"{ __typename }"}', "PostGraphile")


def checkout(revision: str) -> Path:
    """A detached worktree of `revision` in a temporary folder (removed at the end)."""
    tree = Path(tempfile.mkdtemp(prefix="chatql-bench-tree-")) / "chatql"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--quiet", str(tree), revision], cwd=ROOT, check=True
    )
    return tree


def server_label(server: Server) -> str:
    label = f"chatql, {server.workers} worker{'s' if server.workers > 1 else ''}"
    return f"{label}, {server.variant}" if server.variant else label


def graphql(url: str, query: str, variables: dict[str, Any], token: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


# ---- the database ------------------------------------------------------------------------


class Database:
    def __init__(self, dsn: str, name: str) -> None:
        self.dsn, self.name = dsn, name

    async def _run(self, sql: str, *args: Any) -> list[Any]:
        connection = await asyncpg.connect(self.dsn)
        try:
            return list(await connection.fetch(sql, *args))
        finally:
            await connection.close()

    def fetch(self, sql: str, *args: Any) -> list[Any]:
        return asyncio.run(self._run(sql, *args))

    def postmaster(self) -> int:
        """The pid of PostgreSQL's postmaster: the first line of `postmaster.pid` in its data
        directory (the bench's cluster is local, and its files are ours or root's to read)."""
        folder = self.fetch("SELECT current_setting('data_directory')")[0][0]
        return int((Path(folder) / "postmaster.pid").read_text().split()[0])

    def cpu_seconds(self, postmaster: int) -> float:
        """CPU time of the whole cluster: the postmaster, its live backends and helpers, and
        the backends it has reaped. PostgreSQL runs nothing else on this machine's cluster but
        the bench, so a run's difference is the database's CPU for that run's requests (plus
        the checkpointer and autovacuum, a little)."""
        return cpu_seconds(descendants(postmaster), reaped=postmaster)

    def reset_statements(self) -> None:
        self.fetch("SELECT pg_stat_statements_reset()")

    def statements(self) -> tuple[int, int]:
        """(data statements, all round trips) run in the bench database since the last reset."""
        rows = self.fetch(
            "SELECT query, calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = $1",
            self.name,
        )
        rows = [row for row in rows if "pg_stat_statements" not in row["query"]]
        data = sum(row["calls"] for row in rows if not UTILITY.match(row["query"]))
        return data, sum(row["calls"] for row in rows)


# ---- the load generators -----------------------------------------------------------------


def wrk(
    url: str,
    *,
    bodies: list[str],
    tokens: list[str],
    connections: int,
    threads: int,
    seconds: float,
    check: str | None = None,
) -> Sample:
    script = (
        WRK_SCRIPT.replace("{BODIES}", lua_list(bodies))
        .replace("{TOKENS}", lua_list(tokens))
        .replace("{CHECK}", lua_string(check) if check else "false")
        .replace("{NONCE}", lua_string(uuid.uuid4().hex[:12]))
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        output = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "-s",
                handle.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(handle.name)
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    return Sample(
        requests=result["requests"],
        seconds=result["duration_us"] / 1e6,
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        errors=result["errors"] + result["bad"],
    )


def pgbench(
    pg_bin: str, dsn_parts: dict[str, str], sql: str, *, clients: int, threads: int, seconds: float
) -> Sample:
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "limit.sql"
        script.write_text(" ".join(sql.split()) + "\n")
        started = time.perf_counter()
        subprocess.run(
            [
                str(Path(pg_bin) / "pgbench"),
                "-n",
                f"-c{clients}",
                f"-j{threads}",
                f"-T{max(1, round(seconds))}",
                "-f",
                str(script),
                "-l",
                f"--log-prefix={folder}/log",
                "-h",
                dsn_parts["host"],
                "-p",
                dsn_parts["port"],
                "-U",
                dsn_parts["user"],
                dsn_parts["database"],
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=folder,
        )
        elapsed = time.perf_counter() - started
        latencies = sorted(
            int(line.split()[2])
            for log in Path(folder).glob("log*")
            for line in log.read_text().splitlines()
        )
    if not latencies:
        return Sample(requests=0, seconds=elapsed, p50_ms=0.0, p99_ms=0.0)
    return Sample(
        requests=len(latencies),
        seconds=min(elapsed, float(max(1, round(seconds)))),
        p50_ms=latencies[len(latencies) // 2] / 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1000,
        statements=len(latencies),
        round_trips=len(latencies),
    )


# ---- the run -----------------------------------------------------------------------------


@dataclass
class Fixture:
    admin_token: str
    owner_token: str
    owner_id: int
    conversation_id: str
    conversation_gid: str
    sender_tokens: list[str]
    sender_conversations: list[str]


def prepare(server: Server, database: Database) -> Fixture:
    def log_in(name: str) -> str:
        payload = graphql(
            server.url,
            "mutation($l: String!, $p: String!) { logIn(input: {login: $l, password: $p}) "
            "{ token } }",
            {"l": name, "p": PASSWORD},
            None,
        )
        token: str = payload["data"]["logIn"]["token"]
        return token

    def first_conversation(username: str) -> tuple[int, str]:
        row = database.fetch(
            "SELECT u.id, c.id AS conversation FROM users u JOIN conversations c "
            "ON c.user_id = u.id WHERE u.username = $1 ORDER BY c.updated_at DESC, c.id DESC "
            "LIMIT 1",
            username,
        )[0]
        return int(row["id"]), str(row["conversation"])

    import base64

    def gid(kind: str, key: str) -> str:
        return base64.b64encode(f"{kind}:{key}".encode()).decode()

    owner_id, conversation = first_conversation("user2")
    # Senders beyond the first 50 users, so W1 never changes what Q1 reads.
    senders = [f"user{n}" for n in range(991, 991 + W1_CLIENTS)]
    return Fixture(
        admin_token=log_in("user1"),
        owner_token=log_in("user2"),
        owner_id=owner_id,
        conversation_id=conversation,
        conversation_gid=gid("Conversation", conversation),
        sender_tokens=[log_in(name) for name in senders],
        sender_conversations=[gid("Conversation", first_conversation(n)[1]) for n in senders],
    )


def first_difference(left: Any, right: Any, path: str = "") -> str | None:
    """Where two plain values (bench.workloads' normal form) first differ, or None."""
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        if len(left) != len(right):
            return f"{path or 'top'}: {len(left)} items against {len(right)}"
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            found = first_difference(a, b, f"{path}[{index}]")
            if found:
                return found
        return None
    return None if left == right else f"{path or 'top'}: {left!r} against {right!r}"


def read_variables(read: Read, fixture: Fixture, source: str) -> dict[str, Any]:
    if not read.has_id:
        return {}
    return {"id": fixture.conversation_gid if source == CHATQL else fixture.conversation_id}


def check_answers(
    server: Server,
    postgraphile: PostGraphile | None,
    fixture: Fixture,
    database: Database,
    reads: list[Read],
) -> dict[str, int]:
    """Before anything is measured, every read workload's forms carry the same data: chatql's
    answer has no errors, equals the exact limit's document as parsed JSON, and normalises
    (`bench.workloads`) to the same data as PostGraphile's answer and the lean limit's
    document. Returns the size of chatql's answers; exits on the first difference."""
    sizes = {}
    for read in reads:
        token = fixture.admin_token if read.as_admin else fixture.owner_token
        answer = graphql(server.url, read.chatql, read_variables(read, fixture, CHATQL), token)
        assert "errors" not in answer, answer
        if read.as_admin:
            users = answer["data"]["users"]["edges"]
            messages = sum(
                len(c["node"]["messages"]["edges"])
                for u in users
                for c in u["node"]["conversations"]["edges"]
            )
            assert len(users) == 50 and messages == 10_000, (len(users), messages)
        key, owner = fixture.conversation_id, fixture.owner_id
        if json.loads(database.fetch(read.exact_sql(key, owner))[0][0]) != answer:
            raise SystemExit(f"{read.name}: the exact limit's document differs from chatql's")
        plain = read.normalise(CHATQL, answer)
        others = [(LEAN, json.loads(database.fetch(read.lean_sql(key, owner))[0][0]))]
        if postgraphile is not None:
            theirs = graphql(
                postgraphile.url,
                read.postgraphile,
                read_variables(read, fixture, POSTGRAPHILE),
                None,
            )
            assert "errors" not in theirs, theirs
            others.append((POSTGRAPHILE, theirs))
        for source, other in others:
            difference = first_difference(plain, read.normalise(source, other))
            if difference:
                raise SystemExit(f"{read.name}: {source} differs from chatql at {difference}")
        sizes[read.name] = len(json.dumps(answer, separators=(",", ":")))
    return sizes


def body(query: str, variables: dict[str, Any]) -> str:
    return json.dumps({"query": query, "variables": variables}, separators=(",", ":"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True, help="postgresql://user@host:port/db (libpq)")
    parser.add_argument("--pg-bin", required=True)
    parser.add_argument("--workers", default="1", help="comma-separated worker counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="per loaded run")
    parser.add_argument("--single-seconds", type=float, default=3.0, help="per one-client run")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "latest.md"))
    parser.add_argument(
        "--only", default="", help="comma-separated workloads to run (Q1,Q1+,Q2,W1)"
    )
    parser.add_argument(
        "--no-postgraphile",
        action="store_true",
        help="leave PostGraphile out (the limits and chatql still run)",
    )
    parser.add_argument("--note", default="", help="a line to put above the table")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE,...",
        help="also run a 1-worker server with these settings, e.g. "
        "'no plan:CHATQL_QUERY_PLAN=0', or the chatql of an older commit, e.g. "
        "'before:@ff252b7' (repeatable)",
    )
    args = parser.parse_args()

    match = re.fullmatch(r"postgresql://(\w+)@([\w.]+):(\d+)/(\w+)", args.dsn)
    if not match:
        raise SystemExit("--dsn must look like postgresql://user@host:port/db")
    parts = dict(zip(("user", "host", "port", "database"), match.groups(), strict=True))
    database = Database(args.dsn, parts["database"])
    database_url = args.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    names = [read.name for read in READS] + ["W1"]
    wanted = set(filter(None, args.only.upper().split(","))) or set(names)
    if wanted - set(names):
        raise SystemExit(f"--only: unknown workloads {sorted(wanted - set(names))}")
    reads = [read for read in READS if read.name in wanted]

    servers = [Server(database_url, int(n), {}) for n in args.workers.split(",") if n.strip()]
    trees: list[Path] = []
    for variant in args.variant:
        name, _, assignments = variant.partition(":")
        if assignments.startswith("@"):
            trees.append(checkout(assignments[1:]))
            servers.append(Server(database_url, 1, {}, name, tree=trees[-1]))
            continue
        env = dict(item.split("=", 1) for item in assignments.split(",") if item)
        servers.append(Server(database_url, 1, env, name))
    postgraphile: PostGraphile | None = None
    try:
        if not args.no_postgraphile:
            postgraphile = PostGraphile(args.dsn)
        fixture = prepare(servers[0], database)
        sizes = check_answers(servers[0], postgraphile, fixture, database, reads)
        print(
            "answers checked: "
            + ", ".join(f"{name} {size:,} bytes" for name, size in sizes.items()),
            flush=True,
        )
        rows, before_w1 = run_rounds(
            args, servers, postgraphile, fixture, database, parts, reads, "W1" in wanted
        )
        after_w1 = count_w1(database, fixture)
        table = render(args, servers, postgraphile, rows, sizes, before_w1, after_w1)
    finally:
        for server in [*servers, *([postgraphile] if postgraphile else [])]:
            server.stop()
        for tree in trees:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False
            )
    print(table)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table)
    return 0


def count_w1(database: Database, fixture: Fixture) -> tuple[int, int]:
    """(messages, distinct client ids) in the senders' conversations."""
    import base64

    ids = [base64.b64decode(g).decode().split(":", 1)[1] for g in fixture.sender_conversations]
    row = database.fetch(
        "SELECT count(*) AS n, count(DISTINCT (conversation_id, client_id)) AS d "
        "FROM messages WHERE conversation_id = ANY($1::varchar[]) AND client_id LIKE 'w1-%'",
        ids,
    )[0]
    return int(row["n"]), int(row["d"])


LABELS = {
    LEAN: "the lean limit (pgbench, one SQL statement)",
    EXACT: "the exact limit (pgbench, one SQL statement)",
}

Run = tuple[str, str, str, bool, Callable[[], Sample]]  # workload, label, kind, single, go


def run_rounds(
    args: argparse.Namespace,
    servers: list[Server],
    postgraphile: PostGraphile | None,
    fixture: Fixture,
    database: Database,
    parts: dict[str, str],
    reads: list[Read],
    writes: bool,
) -> tuple[list[Row], tuple[int, int]]:
    """The rows of the table, and the W1 count after the warm-up (see `count_w1`). In each
    round every read workload runs on each chatql server, on PostGraphile, then as the lean
    and the exact limit, each loaded and with one client; then W1 on each chatql server."""
    rows: dict[tuple[str, str], Row] = {}
    postmaster = database.postmaster()
    w1_bodies = [
        body(W1, {"input": {"conversationId": c, "content": W1_CONTENT, "clientId": "w1-@N@"}})
        for c in fixture.sender_conversations
    ]

    def measured(process: Process | None, run: Callable[[], Sample]) -> Sample:
        """Runs `run` and adds the server's CPU, its peak RSS, PostgreSQL's CPU and the
        statements PostgreSQL counted meanwhile."""
        database.reset_statements()
        if process is not None:
            process.reset_peak_rss()
        cpu = process.cpu_seconds() if process is not None else 0.0
        pg_cpu = database.cpu_seconds(postmaster)
        sample = run()
        sample.pg_cpu_ms = (database.cpu_seconds(postmaster) - pg_cpu) * 1000
        if process is not None:
            sample.cpu_ms = (process.cpu_seconds() - cpu) * 1000
            sample.peak_rss_mb = process.peak_rss_mb()
            sample.statements, sample.round_trips = database.statements()
        return sample

    def http(
        name: str,
        process: Server | PostGraphile,
        kind: str,
        bodies: list[str],
        tokens: list[str],
        **options: Any,
    ) -> Iterator[Run]:
        label = server_label(process) if isinstance(process, Server) else process.label
        clients = options.pop("clients", args.connections)
        check = options.pop("check", None)
        for single in (False, True):
            connections = 1 if single else clients
            threads = 1 if single else min(2, clients) if name != "W1" else clients

            def go(
                connections: int = connections, threads: int = threads, single: bool = single
            ) -> Sample:
                # (a closure per run: the default arguments pin this run's settings)
                def load() -> Sample:
                    return wrk(
                        process.url,
                        bodies=bodies,
                        tokens=tokens,
                        connections=connections,
                        threads=threads,
                        seconds=args.single_seconds if single else args.seconds,
                        check=check,
                    )

                return measured(process, load)

            yield name, label, kind, single, go

    def limit(name: str, kind: str, sql: str) -> Iterator[Run]:
        for single in (False, True):

            def go(single: bool = single) -> Sample:
                def load() -> Sample:
                    return pgbench(
                        args.pg_bin,
                        parts,
                        sql,
                        clients=1 if single else args.connections,
                        threads=1 if single else 2,
                        seconds=args.single_seconds if single else args.seconds,
                    )

                return measured(None, load)

            yield name, LABELS[kind], kind, single, go

    plan: list[Run] = []
    for read in reads:
        token = fixture.admin_token if read.as_admin else fixture.owner_token
        ours = body(read.chatql, read_variables(read, fixture, CHATQL))
        for server in servers:
            plan += http(read.name, server, CHATQL, [ours], [token])
        if postgraphile is not None:
            theirs = body(read.postgraphile, read_variables(read, fixture, POSTGRAPHILE))
            plan += http(read.name, postgraphile, POSTGRAPHILE, [theirs], [""])
        key, owner = fixture.conversation_id, fixture.owner_id
        plan += limit(read.name, LEAN, read.lean_sql(key, owner))
        plan += limit(read.name, EXACT, read.exact_sql(key, owner))
    if writes:
        for server in servers:
            plan += http(
                "W1",
                server,
                CHATQL,
                w1_bodies,
                fixture.sender_tokens,
                clients=W1_CLIENTS,
                check='"sendMessage":{"id"',
            )

    print(f"warming up ({len(plan)} runs a round, {args.rounds} rounds)", flush=True)
    saved = args.seconds, args.single_seconds
    args.seconds = args.single_seconds = 1
    for *_, go in plan:
        go()
    args.seconds, args.single_seconds = saved
    before_w1 = count_w1(database, fixture)
    for number in range(1, args.rounds + 1):
        for name, label, kind, single, go in plan:
            sample = go()
            row = rows.setdefault((name, label), Row(name, label, kind))
            (row.single if single else row.loaded).append(sample)
            requests = max(sample.requests, 1)
            print(
                f"round {number} {name:<3} {label:<44} {'1 client' if single else 'loaded':<8} "
                f"{sample.rate:8.1f} req/s p50 {sample.p50_ms:7.1f} ms  "
                f"cpu {sample.cpu_ms / requests:6.1f} ms/req  "
                f"pg {sample.pg_cpu_ms / requests:6.1f} ms/req  errors {sample.errors}",
                flush=True,
            )
    return list(rows.values()), before_w1


def render(
    args: argparse.Namespace,
    servers: list[Server],
    postgraphile: PostGraphile | None,
    rows: list[Row],
    sizes: dict[str, int],
    before_w1: tuple[int, int],
    after_w1: tuple[int, int],
) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        cpu = model
    except (OSError, StopIteration):
        pass
    command = (
        f"bench/run --rounds {args.rounds} --seconds {args.seconds:g} "
        f"--single-seconds {args.single_seconds:g} --workers {args.workers}"
        + (f" --only {args.only}" if args.only else "")
        + (" --no-postgraphile" if args.no_postgraphile else "")
        + "".join(f" --variant '{v}'" for v in args.variant)
    )
    lines = [
        f"## Bench run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores ({cpu}), shared by PostgreSQL, chatql"
        f"{', PostGraphile' if postgraphile else ''} and the load generator (and, on this "
        f"workplace, other sessions' work: absolute figures are noisy, ratios within one run "
        f"are what count); Python "
        f"{platform.python_version()}. Command: `{command}`. "
        f"Medians of {args.rounds} interleaved rounds; {args.connections} connections "
        f"(W1: {W1_CLIENTS} clients), one-client latency from separate 1-connection runs. "
        "Answers: " + ", ".join(f"{name} {size:,} bytes" for name, size in sizes.items()) + ".",
        "",
    ]
    if args.note:
        lines += [args.note, ""]
    lines += [
        "| workload | server | req/s | p50 ms | p99 ms | one-client ms | SQL statements/req "
        "| round trips/req | server CPU ms/req | PostgreSQL CPU ms/req | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        is_limit = row.kind in (LEAN, EXACT)
        cpu_ms = "" if is_limit else f"{row.per_request('cpu_ms'):.1f}"
        peak_rss = max(sample.peak_rss_mb for sample in row.loaded + row.single)
        peak = "" if is_limit else f"{peak_rss:.0f}"
        answered = [sample for sample in row.single if sample.requests]
        single = f"{row.median('p50_ms', answered):.1f}" if answered else "> run"
        lines.append(
            f"| {row.name} | {row.server} | {row.median('rate'):.1f} | {row.median('p50_ms'):.1f} "
            f"| {row.median('p99_ms'):.1f} | {single} "
            f"| {row.per_request('statements'):.2f} | {row.per_request('round_trips'):.2f} "
            f"| {cpu_ms} | {row.per_request('pg_cpu_ms'):.1f} | {peak} |"
        )
    lines += ["", *ratios(rows, postgraphile)]
    errors = sum(sample.errors for row in rows for sample in row.loaded + row.single)
    stored = after_w1[0] - before_w1[0]
    sent = sum(s.requests for row in rows if row.name == "W1" for s in row.loaded + row.single)
    processes: list[Process] = [*servers, *([postgraphile] if postgraphile else [])]
    lines += [
        "",
        f"Failed or wrong responses: {errors}. W1: {sent:,} sends answered, {stored:,} messages "
        f"stored (requests still in flight when wrk stops are stored but not counted), "
        f"{after_w1[0] - after_w1[1]} duplicates. Peak RSS is the largest server process's "
        "VmHWM over that workload's runs (reset before each run; start-up and log-in, where "
        "Argon2 takes 64 MiB for a moment, are not in it): "
        + ", ".join(
            f"{label(p)} {max(p.lifetime_peak_mb, p.peak_rss_mb()):.0f} MB" for p in processes
        )
        + " over the whole life of each server. PostgreSQL CPU is the whole cluster's (its "
        "backends, and the checkpointer and autovacuum a little) over each run, per request. "
        "Statements per request are counted by PostgreSQL over the requests the load generator "
        "saw answered: requests still running when a run ends add a little (the tests count "
        "chatql's exactly). '> run': no answer within a one-client run.",
        "",
    ]
    return "\n".join(lines)


def label(process: Process) -> str:
    if isinstance(process, PostGraphile):
        return process.label
    assert isinstance(process, Server)
    return server_label(process)


def ratios(rows: list[Row], postgraphile: PostGraphile | None) -> list[str]:
    """chatql's rate over each anchor's, per workload and chatql server, and, for Q1+, its
    ratios as a share of Q1's (issue 12 asks for at least 0.8)."""
    anchors = [
        (POSTGRAPHILE, postgraphile.label if postgraphile else ""),
        (LEAN, "lean"),
        (EXACT, "exact"),
    ]
    kinds = [kind for kind, _ in anchors if any(row.kind == kind for row in rows)]
    if not kinds:
        return []
    rate = {(row.name, row.kind): row.median("rate") for row in rows if row.kind != CHATQL}
    names = dict(anchors)
    lines = [
        "Ratios: chatql's req/s over each anchor's, in this run (higher is better; 1 would be "
        "as fast as the anchor).",
        "",
        "| workload | server | "
        + " | ".join(
            f"÷ {names[kind]}" if kind == POSTGRAPHILE else f"÷ {names[kind]} limit"
            for kind in kinds
        )
        + " |",
        "|---|---|" + "---:|" * len(kinds),
    ]
    of: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        if row.kind != CHATQL or (row.name, kinds[0]) not in rate:
            continue
        values = [row.median("rate") / rate[(row.name, kind)] for kind in kinds]
        of[(row.name, row.server)] = values
        lines.append(
            f"| {row.name} | {row.server} | " + " | ".join(f"{v:.3f}" for v in values) + " |"
        )
    shares = [
        f"{server}: "
        + ", ".join(
            f"{plus / plain:.2f} (÷ {names[kind]})"
            for kind, plus, plain in zip(kinds, values, of[("Q1", server)], strict=True)
        )
        for (name, server), values in of.items()
        if name == "Q1+" and ("Q1", server) in of
    ]
    if shares:
        lines += [
            "",
            "Q1+'s ratios as a share of Q1's (issue 12: at least 0.8): " + "; ".join(shares) + ".",
        ]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
