"""chatql: the Starlette app and the command line.

The only module that reads the environment and request headers. `python server.py` migrates
the database and serves on 127.0.0.1:8000; `python server.py --help` lists the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import logging
import os
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from db.engine import is_sqlite, make_engine, make_reader, make_sessionmaker
from db.migrate import upgrade_to_head
from realtime.broker import LocalBroker
from schema import make_schema
from schema.auth import Passwords
from schema.caches import DocumentCache
from schema.config import Config
from schema.context import Context, Services, build_context

if TYPE_CHECKING:
    from db.seed import SeedCounts

logger = logging.getLogger("chatql")
DATA_DIR = Path("data")
DEMO_PASSWORD = "chatql-demo"


class Settings(BaseSettings):
    """Every setting, read from `CHATQL_*` variables (and `DATABASE_URL`)."""

    model_config = SettingsConfigDict(env_prefix="CHATQL_", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{DATA_DIR / 'chatql.db'}",
        validation_alias="DATABASE_URL",
    )
    secret_key: str | None = None
    token_ttl: int = 604_800
    default_page_size: int = 20
    max_page_size: int = 100
    max_import_messages: int = 1000
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65_536
    argon2_parallelism: int = 4
    db_pool_size: int = 10
    db_max_overflow: int = 10
    # A ping before every checkout costs a round trip per session; without it a connection
    # the database dropped fails one request, and the pool then replaces its connections.
    db_pre_ping: bool = False
    log_level: str = "INFO"
    # Performance (see bench/README.md). Each can be turned off to compare.
    query_plan: bool = True
    document_cache: int = 256
    gc_threshold: int = 700

    def resolved_secret_key(self) -> str:
        """The configured key, else one generated once and kept in the data folder."""
        if self.secret_key:
            return self.secret_key
        path = DATA_DIR / "secret_key"
        if not path.exists():
            DATA_DIR.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
        return path.read_text().strip()

    def schema_config(self) -> Config:
        return Config(
            secret_key=self.resolved_secret_key(),
            token_ttl=self.token_ttl,
            default_page_size=self.default_page_size,
            max_page_size=self.max_page_size,
            max_import_messages=self.max_import_messages,
            argon2_time_cost=self.argon2_time_cost,
            argon2_memory_cost=self.argon2_memory_cost,
            argon2_parallelism=self.argon2_parallelism,
        )


class GraphQLView(GraphQL[Context, None]):
    """Strawberry's ASGI view; the process-wide services come from the app's state."""

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        client = request.client.host if request.client else None
        return await build_context(
            request.app.state.services,
            authorization=request.headers.get("authorization"),
            request_id=request.headers.get("x-request-id") or uuid.uuid4().hex,
            client_address=client,
            request=request,
            response=response,
        )


def create_app(settings: Settings | None = None, *, serving: bool = False) -> Starlette:
    """The app; `serving` (the `serve` command) also tunes the garbage collector for a
    long-lived process."""
    settings = settings or Settings()
    config = settings.schema_config()
    passwords = Passwords.from_config(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = make_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pre_ping=settings.db_pre_ping,
        )
        services = Services(
            sessionmaker=make_sessionmaker(engine),
            reader=make_reader(engine),
            config=config,
            passwords=passwords,
            broker=LocalBroker(),
        )
        app.state.engine = engine
        app.state.services = services
        if serving:
            # What start-up made lives as long as the process: move it out of the collector's
            # sight. A higher threshold saved little CPU and cost much memory (bench/README.md).
            gc.collect()
            gc.freeze()
            gc.set_threshold(settings.gc_threshold, 10, 10)
        try:
            yield
        finally:
            await engine.dispose()

    caches = [DocumentCache(settings.document_cache).extension()]
    graphql = GraphQLView(
        make_schema(
            extensions=caches if settings.document_cache > 0 else [], planned=settings.query_plan
        )
    )

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        Route("/healthz", healthz),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def serving_app() -> Starlette:
    return create_app(serving=True)


# ---- command line -----------------------------------------------------------------------


async def _migrate(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    asyncio.run(_migrate(settings))
    print("database is at the newest revision")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    if args.workers > 1 and is_sqlite(settings.database_url):
        print(
            "SQLite serves one process: use --workers 1, or set DATABASE_URL to PostgreSQL.",
            file=sys.stderr,
        )
        return 2
    asyncio.run(_migrate(settings))
    print(f"chatql: GraphiQL at http://{args.host}:{args.port}/graphql", file=sys.stderr)
    uvicorn.run(
        "server:serving_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        reload=args.reload,
        log_level=settings.log_level.lower(),
    )
    return 0


async def _create_admin(settings: Settings, username: str, email: str, password: str) -> None:
    from db import users as user_data
    from schema.validation import email_problem, password_problem, raise_for, username_problem

    raise_for(
        {
            "username": username_problem(username),
            "email": email_problem(email),
            "password": password_problem(password),
        }
    )
    await _migrate(settings)
    passwords = Passwords.from_config(settings.schema_config())
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await user_data.create_user(
                session,
                username=username,
                email=email,
                hashed_password=await passwords.hash(password),
                full_name=None,
                is_admin=True,
            )
    finally:
        await engine.dispose()


def cmd_create_admin(settings: Settings, args: argparse.Namespace) -> int:
    from db.errors import Conflict
    from schema.errors import BadUserInput

    password = os.environ.get("CHATQL_ADMIN_PASSWORD") or getpass.getpass("Password: ")
    try:
        asyncio.run(_create_admin(settings, args.username, args.email, password))
    except BadUserInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Conflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"admin {args.username} created")
    return 0


async def _seed(settings: Settings, args: argparse.Namespace) -> SeedCounts:
    from db.seed import SeedPlan, seed

    await _migrate(settings)
    plan = SeedPlan(
        users=args.users,
        conversations_per_user=args.conversations_per_user,
        messages_per_conversation=args.messages_per_conversation,
        mean_length=args.mean_length,
        seed=args.seed,
    )
    passwords = Passwords.from_config(settings.schema_config())
    engine = make_engine(settings.database_url)
    bar = ProgressBar(sys.stderr)
    try:
        return await seed(
            engine,
            plan=plan,
            hashed_password=await passwords.hash(args.password),
            reset=args.reset,
            progress=bar.update,
        )
    finally:
        bar.close()
        await engine.dispose()


class ProgressBar:
    """One line that redraws itself: the table being written, a bar, and rows per second."""

    def __init__(self, stream: Any, width: int = 30) -> None:
        self._stream = stream
        self._width = width
        self._started = time.perf_counter()
        self._table = ""
        self._drawn = False

    def update(self, table: str, done: int, total: int) -> None:
        if table != self._table:
            if self._drawn:
                self._stream.write("\n")
            self._table, self._started = table, time.perf_counter()
        share = done / total if total else 1.0
        filled = int(share * self._width)
        rate = done / max(time.perf_counter() - self._started, 1e-9)
        line = f"{table:<13} [{'#' * filled}{'.' * (self._width - filled)}] {done:>10,}/{total:,}"
        self._stream.write(f"\r{line}  {rate:,.0f} rows/s ")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")


def cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    from db.seed import NotEmpty
    from schema.validation import password_problem

    problem = password_problem(args.password)
    if problem:
        print(f"error: --password {problem}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        counts = asyncio.run(_seed(settings, args))
    except NotEmpty as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    rows = counts.users + counts.conversations + counts.messages
    print(
        f"seeded {counts.users:,} users, {counts.conversations:,} conversations and "
        f"{counts.messages:,} messages in {elapsed:.1f} s ({rows / elapsed:,.0f} rows/s); "
        f"log in as user1..user{counts.users} with password {args.password!r} (user1 is an admin)"
    )
    return 0


def cmd_export_schema(_: Settings, __: argparse.Namespace) -> int:
    print(make_schema().as_str())
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="python server.py",
        description="chatql, a GraphQL API server for chat apps. With no command: serve.",
    )
    commands = main.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="migrate, then serve the API (the default)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (PostgreSQL only above 1)"
    )
    serve.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    serve.set_defaults(handler=cmd_serve)

    migrate = commands.add_parser("migrate", help="bring the database to the newest revision")
    migrate.set_defaults(handler=cmd_migrate)

    admin = commands.add_parser(
        "create-admin",
        help="create an admin account (password from CHATQL_ADMIN_PASSWORD or a prompt)",
    )
    admin.add_argument("username")
    admin.add_argument("email")
    admin.set_defaults(handler=cmd_create_admin)

    seed = commands.add_parser(
        "seed",
        help="write a demo data set in bulk (users user1..userN; user1 is an admin)",
        description="Write a demo data set in bulk: users user1..userN (user1 an admin), each "
        "with conversations of user and assistant messages of varied length. Needs a database "
        "with no users, unless --reset.",
    )
    seed.add_argument("--users", type=int, default=100, help="number of users (default 100)")
    seed.add_argument(
        "--conversations-per-user", type=int, default=20, help="conversations each (default 20)"
    )
    seed.add_argument(
        "--messages-per-conversation", type=int, default=50, help="messages each (default 50)"
    )
    seed.add_argument(
        "--mean-length", type=int, default=200, help="average message length (default 200)"
    )
    seed.add_argument(
        "--password",
        default=DEMO_PASSWORD,
        help=f"password of every seeded user (default {DEMO_PASSWORD!r})",
    )
    seed.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    seed.add_argument(
        "--reset", action="store_true", help="delete every user, conversation and message first"
    )
    seed.set_defaults(handler=cmd_seed)

    export = commands.add_parser("export-schema", help="print the GraphQL SDL")
    export.set_defaults(handler=cmd_export_schema)
    return main


COMMANDS = {"serve", "migrate", "create-admin", "seed", "export-schema"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in {"-h", "--help"}):
        argv.insert(0, "serve")
    args = parser().parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper())
    handler: Any = args.handler
    return int(handler(settings, args))


if __name__ == "__main__":
    raise SystemExit(main())
