"""chatql: the Starlette app and the command line.

The only module that reads the environment and request headers. `python server.py` migrates
the database and serves on 127.0.0.1:8000; `python server.py --help` lists the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import gc
import getpass
import json
import logging
import logging.config
import os
import secrets
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UnsetType

import explorer
from db.engine import Timeouts, is_sqlite, make_engine, make_reader, make_sessionmaker, ping
from db.migrate import upgrade_to_head
from db.reads import DriverReads, make_reads
from ops import health
from ops.instrument import OperationRecorder, answered_query, instrument_engine
from ops.logs import log_config
from ops.metrics import metrics_endpoint
from ops.middleware import RequestLog, operation_record
from ops.record import RequestRecord, current_request_id
from realtime.broker import make_broker
from realtime.retention import ChangeRetention
from realtime.watch import ViewerWatch
from schema import make_schema
from schema.auth import Passwords
from schema.caches import DocumentCache
from schema.config import Config
from schema.context import Context, Services, build_context
from transport.body import BodyLimit
from transport.deadline import RequestDeadline
from transport.fast import FastLane
from transport.http_protocol import HeaderTimeoutProtocol
from transport.persisted import Bounds, StoreRegistered
from transport.view import PREFLIGHT_HEADERS, BaseGraphQLView
from transport.websockets import LegacyWSProtocol, TransportWSProtocol

if TYPE_CHECKING:
    from db.seed import SeedCounts
    from ops.progress import RowProgress

logger = logging.getLogger("chatql")
DATABASE_DRIVERS = {"sqlite+aiosqlite", "postgresql+asyncpg"}
DATABASE_URL_FORMS = "use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER:PASSWORD@HOST/NAME"
WS_AUTHENTICATED = "ws_authenticated"
WS_AUTHORIZATION = "ws_authorization"
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
    # Hardening (issue 5): limits, introspection, suggestions, CORS, persisted queries.
    max_query_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 5000
    max_query_cost: int = 50_000
    max_body_bytes: int = 1_048_576
    introspection: bool = True
    debug: bool = False
    cors_origins: Annotated[list[str], NoDecode] = []
    persisted_query_cache_size: int = 1000
    # The shared table of persisted queries: document size, rows, and how long each is kept.
    persisted_query_max_bytes: int = 16_384
    persisted_query_max_rows: int = 5_000
    persisted_query_ttl: int = 2_592_000

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        # A comma-separated list, or JSON.
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else text.replace(",", " ").split()
        return value

    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65_536
    argon2_parallelism: int = 4
    # KiB for hashes running at once, per process; over it, hashes wait their turn.
    argon2_memory_budget: int = 262_144
    argon2_max_waiting: int = 32
    login_failures_per_name: int = 10
    login_failures_per_address: int = 100
    logins_per_address: int = 300
    signups_per_address: int = 50
    login_failure_window: int = 900
    trust_proxy: bool = False
    db_pool_size: int = 10
    db_max_overflow: int = 10
    # A ping before every checkout costs a round trip per session; without it a connection
    # the database dropped fails one request, and the pool then replaces its connections.
    db_pre_ping: bool = False
    log_level: str = "INFO"
    # Events a subscriber may fall behind by before its subscription is ended.
    subscription_queue_size: int = 1000
    # WebSockets: seconds to wait for `connection_init` (both protocols close with 4408), and
    # operations one connection may have open at once (RATE_LIMITED beyond).
    ws_init_timeout: float = 10.0
    ws_max_operations: int = 100
    # How often the subscriptions of deactivated users are looked for and ended.
    subscription_recheck_seconds: float = 30.0
    # On SIGTERM, how long in-flight requests may take to finish.
    shutdown_timeout: int = 30
    # auto: JSON lines unless stdout is a terminal.
    log_format: Literal["auto", "json", "text"] = "auto"
    ready_timeout: float = 2.0
    # Faults (issue 11): seconds a statement, a wait for a pooled connection and a whole HTTP
    # request may take before the client is answered SERVICE_UNAVAILABLE (503); 0: no limit.
    db_statement_timeout: float = 10.0
    db_pool_timeout: float = 5.0
    request_timeout: float = 30.0
    # Seconds the change feed keeps a change (issue 13); 0 keeps every change.
    change_retention: int = Field(default=2_592_000, ge=0)
    # Read by `create-admin` alone; unset, it asks twice at a terminal (and refuses elsewhere).
    admin_password: str | None = None

    def log_config(self, *, stderr: bool = False) -> dict[str, Any]:
        """Logs on stdout when serving; other commands keep stdout for their output."""
        stream = sys.stderr if stderr else sys.stdout
        as_json = self.log_format == "json" or (self.log_format == "auto" and not stream.isatty())
        return log_config(level=self.log_level, json=as_json, stderr=stderr)

    # Performance (see bench/README.md). Each can be turned off to compare.
    query_plan: bool = True
    document_cache: int = 256
    gc_threshold: int = 700

    # Resource bounds and operators' access (issue 11).
    # Seconds a client has to send a whole request head (transport/http_protocol.py).
    header_timeout: float = Field(default=10.0, gt=0)
    # Open connections and WebSockets per process above which requests are answered 503.
    max_connections: int | None = Field(default=None, ge=1)
    # When set, /metrics answers only `Authorization: Bearer <token>`.
    metrics_token: str | None = Field(default=None, min_length=1)

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        try:
            driver = make_url(value).drivername
        except ArgumentError:
            raise ValueError(f"not a database URL; {DATABASE_URL_FORMS}") from None
        if driver not in DATABASE_DRIVERS:
            raise ValueError(f"{driver!r} is not supported; {DATABASE_URL_FORMS}")
        return value

    def resolved_secret_key(self) -> str:
        """The configured key, else one generated once and kept in the data folder."""
        if self.secret_key:
            return self.secret_key
        path = DATA_DIR / "secret_key"
        if not path.exists():
            # Written aside, then linked into place: a racing process sees the whole key or none.
            DATA_DIR.mkdir(parents=True, exist_ok=True)
            draft = path.with_name(f".secret_key.{os.getpid()}")
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
            try:
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        return path.read_text().strip()

    def schema_config(self) -> Config:
        return Config(
            secret_key=self.resolved_secret_key(),
            token_ttl=self.token_ttl,
            default_page_size=self.default_page_size,
            max_page_size=self.max_page_size,
            max_import_messages=self.max_import_messages,
            max_query_depth=self.max_query_depth,
            max_aliases=self.max_aliases,
            max_tokens=self.max_tokens,
            max_query_cost=self.max_query_cost,
            introspection=self.introspection,
            suggestions=self.debug,
            argon2_time_cost=self.argon2_time_cost,
            argon2_memory_cost=self.argon2_memory_cost,
            argon2_parallelism=self.argon2_parallelism,
            argon2_memory_budget=self.argon2_memory_budget,
            argon2_max_waiting=self.argon2_max_waiting,
            login_failures_per_name=self.login_failures_per_name,
            login_failures_per_address=self.login_failures_per_address,
            logins_per_address=self.logins_per_address,
            signups_per_address=self.signups_per_address,
            login_failure_window=self.login_failure_window,
            change_retention=self.change_retention,
        )


def client_address(request: Request | WebSocket, *, trust_proxy: bool) -> str | None:
    """The socket peer, or behind a trusted proxy the first `X-Forwarded-For` hop (the client
    as the first proxy saw it)."""
    if trust_proxy:
        forwarded = request.headers.get("x-forwarded-for", "")
        first = forwarded.split(",", 1)[0].strip()
        if first:
            return first
    return request.client.host if request.client else None


class GraphQLView(BaseGraphQLView):
    """Strawberry's ASGI view; the process-wide services come from the app's state.

    A WebSocket's context is the connection's: it holds the `connection_init` credentials.
    Each operation on it runs with a context of its own (`operation_context`), built by the
    same `build_context` as an HTTP request's.
    """

    graphql_transport_ws_handler_class = TransportWSProtocol
    graphql_ws_handler_class = LegacyWSProtocol
    # The largest WebSocket message, in bytes (the request body limit).
    max_message_bytes: int | None = None

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        return await build_context(
            request.app.state.services,
            authorization=request.headers.get("authorization"),
            request_id=current_request_id() or uuid.uuid4().hex,
            client_address=client_address(request, trust_proxy=request.app.state.trust_proxy),
            request=request,
            response=response,
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        await self.sign_in(context)
        return UnsetType()

    async def sign_in(self, context: Context) -> None:
        """Log the connection in with the token of its `connection_init` payload, if any.

        A bad token closes the socket with 4403; without one the connection opens, and each
        subscription then needs a login. The token is kept for the operations, which check
        it again each time.
        """
        if context.extras.get(WS_AUTHENTICATED):
            return
        context.extras[WS_AUTHENTICATED] = True
        params = context.connection_params or {}
        authorization = params.get("authorization", params.get("Authorization"))
        if authorization is None:
            return
        if not isinstance(authorization, str):
            raise ConnectionRejectionError()
        signed_in = await self.credentials_context(context, authorization)
        if signed_in.auth_error is not None or signed_in.viewer is None:
            raise ConnectionRejectionError()
        context.extras[WS_AUTHORIZATION] = authorization

    async def operation_context(self, connection: Context) -> Context:
        # Bounded by the database's own limits (statement and pool timeouts), not by a task
        # of its own: an operation is cancelled whenever its socket closes, and work cut loose
        # then would outlive the connection it reads on.
        return await self.credentials_context(connection, connection.extras.get(WS_AUTHORIZATION))

    async def credentials_context(self, connection: Context, authorization: str | None) -> Context:
        return await build_context(
            connection.services,
            authorization=authorization,
            request_id=current_request_id() or uuid.uuid4().hex,
            client_address=connection.client_address,
            request=connection.request,
        )

    def operation_record(self, protocol: str) -> contextlib.AbstractContextManager[RequestRecord]:
        return operation_record(protocol)

    async def render_graphql_ide(self, request: Request) -> Response:
        return explorer.page()


def create_app(settings: Settings | None = None, *, serving: bool = False) -> Starlette:
    """The app; `serving` (the `serve` command) also tunes the garbage collector for a
    long-lived process."""
    settings = settings or Settings()
    config = settings.schema_config()
    passwords = Passwords.from_config(config)
    timeouts = Timeouts(
        statement=settings.db_statement_timeout or None, pool=settings.db_pool_timeout or None
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = make_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pre_ping=settings.db_pre_ping,
            timeouts=timeouts,
        )
        sessionmaker = make_sessionmaker(engine)
        broker = make_broker(settings.database_url, queue_size=settings.subscription_queue_size)
        watch = ViewerWatch(
            broker.hub, sessionmaker, interval=settings.subscription_recheck_seconds
        )
        reader = make_reader(engine)
        reads = make_reads(engine, reader, size=settings.db_pool_size, timeouts=timeouts)
        services = Services(
            sessionmaker=sessionmaker,
            reader=reader,
            driver_reads=reads,
            config=config,
            passwords=passwords,
            broker=broker,
        )
        instrument_engine(engine, reads)
        app.state.engine = engine
        app.state.services = services
        app.state.trust_proxy = settings.trust_proxy
        app.state.watch = watch
        app.state.retention = retention = ChangeRetention(
            sessionmaker, seconds=settings.change_retention
        )
        if serving:
            # What start-up made lives as long as the process: move it out of the collector's
            # sight. A higher threshold saved little CPU and cost much memory (bench/README.md).
            gc.collect()
            gc.freeze()
            gc.set_threshold(settings.gc_threshold, 10, 10)
        try:
            if isinstance(reads, DriverReads):
                await reads.start()
            await broker.start()
            watch.start()
            retention.start()
            yield
        finally:
            await retention.close()
            await watch.close()
            await broker.close()
            if isinstance(reads, DriverReads):
                await reads.close()
            await engine.dispose()

    documents = DocumentCache(settings.document_cache)
    caches = [documents.extension()]
    # Browsers on the CORS origins may open subscriptions too (same-origin ones always may).
    graphql = GraphQLView(
        make_schema(
            extensions=[
                *(caches if settings.document_cache > 0 else []),
                OperationRecorder,
                StoreRegistered,
            ],
            planned=settings.query_plan,
        ),
        allowed_origins=settings.cors_origins,
        connection_init_wait_timeout=datetime.timedelta(seconds=settings.ws_init_timeout),
        max_subscriptions_per_connection=settings.ws_max_operations,
        persisted_query_cache_size=settings.persisted_query_cache_size,
        persisted_query_bounds=Bounds(
            max_bytes=settings.persisted_query_max_bytes,
            max_rows=settings.persisted_query_max_rows,
            ttl=settings.persisted_query_ttl,
        ),
        # Queries answered before skip Strawberry's view (their answers stay Strawberry's).
        fast_lane=(
            FastLane(documents, answered_query)
            if settings.document_cache and settings.query_plan
            else None
        ),
    )
    graphql.max_message_bytes = settings.max_body_bytes
    routes = [
        # Every method reaches the view, which answers 405 in GraphQL's error format.
        Route("/graphql", RequestDeadline(graphql, seconds=settings.request_timeout)),
        WebSocketRoute("/graphql", graphql),
        Route("/healthz", health.healthz),
        Route("/readyz", health.readyz(settings.ready_timeout)),
        Route(
            "/metrics",
            metrics_endpoint(
                os.environ.get("PROMETHEUS_MULTIPROC_DIR"), token=settings.metrics_token
            ),
        ),
        *explorer.routes(),
    ]
    # The request log stays outermost, so refusals at the edge are logged too.
    middleware = [Middleware(RequestLog), *edge_middleware(settings)]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def edge_middleware(settings: Settings) -> list[Middleware]:
    """CORS (only for the configured origins), then the body limit."""
    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", "x-request-id", *PREFLIGHT_HEADERS],
                max_age=600,
            )
        )
    middleware.append(Middleware(BodyLimit, max_bytes=settings.max_body_bytes))
    return middleware


def serving_app() -> Starlette:
    return create_app(serving=True)


# ---- command line -----------------------------------------------------------------------


class CommandError(Exception):
    """What a command could not do, in one line: `main` prints it and exits with `status`
    (2 for bad input or settings, 1 for anything else), without a traceback."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


async def _migrate(settings: Settings) -> None:
    """Connect, then migrate; a database that cannot be reached is a `CommandError`."""
    engine = make_engine(settings.database_url)
    try:
        try:
            await ping(engine)
        except Exception as exc:  # any driver, network or file failure: say which, in a line
            shown = make_url(settings.database_url).render_as_string(hide_password=True)
            raise CommandError(f"cannot reach the database {shown}: {_reason(exc)}") from exc
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


def _reason(exc: BaseException) -> str:
    """A driver's own message, first line only (SQLAlchemy's wrapper adds SQL and a link)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


def keep_secret_key(settings: Settings) -> None:
    """The signing key, made and kept now if need be: a folder it cannot be kept in is a
    `CommandError` (the commands that sign or hash need it; `migrate` does not)."""
    try:
        settings.resolved_secret_key()
    except OSError as exc:
        cause = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
        raise CommandError(
            f"cannot keep a secret key in {DATA_DIR / 'secret_key'} ({cause}): "
            "set CHATQL_SECRET_KEY, or run where that folder can be written"
        ) from exc


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    asyncio.run(_migrate(settings))
    print("database is at the newest revision")
    return 0


SQLITE_ONE_PROCESS = (
    "error: SQLite serves one process: use --workers 1, or set DATABASE_URL to PostgreSQL."
)
RELOAD_ONE_PROCESS = "error: --reload runs one process: leave out --workers."


@contextlib.contextmanager
def metrics_directory(workers: int) -> Iterator[None]:
    """With several workers, Prometheus metrics go through files in a folder they share."""
    if workers == 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    folder = tempfile.mkdtemp(prefix="chatql-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    try:
        yield
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(folder, ignore_errors=True)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    if args.workers < 1:
        print("--workers must be at least 1.", file=sys.stderr)
        return 2
    if args.workers > 1 and is_sqlite(settings.database_url):
        print(SQLITE_ONE_PROCESS, file=sys.stderr)
        return 2
    if args.workers > 1 and args.reload:
        print(RELOAD_ONE_PROCESS, file=sys.stderr)
        return 2
    keep_secret_key(settings)  # once, before any worker starts
    asyncio.run(_migrate(settings))
    print(f"chatql: GraphiQL at http://{args.host}:{args.port}/graphql", file=sys.stderr)
    # uvicorn calls `http` with (config, server_state, app_state) for each connection; a
    # partial (unlike a class made here) also pickles into spawned workers.
    protocol = functools.partial(HeaderTimeoutProtocol, header_timeout=settings.header_timeout)
    with metrics_directory(args.workers):
        uvicorn.run(
            "server:serving_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            reload=args.reload,
            http=protocol,  # type: ignore[arg-type]
            limit_concurrency=settings.max_connections,
            # A WebSocket message may be as large as a request body, no larger.
            ws_max_size=settings.max_body_bytes,
            log_config=settings.log_config(),
            log_level=settings.log_level.lower(),
            access_log=False,
            # SIGTERM: stop accepting, close WebSockets (1012, service restart), let in-flight
            # requests finish for up to this long, then run the lifespan's shutdown.
            timeout_graceful_shutdown=settings.shutdown_timeout,
            # `client_address` alone reads X-Forwarded-For, and only with CHATQL_TRUST_PROXY:
            # uvicorn otherwise believes it from 127.0.0.1 (and FORWARDED_ALLOW_IPS), and a
            # client on loopback would pick its own address. Behind a trusted proxy, uvicorn
            # takes the first hop too, as `client_address` does.
            proxy_headers=settings.trust_proxy,
            forwarded_allow_ips="*" if settings.trust_proxy else "127.0.0.1",
        )
    return 0


NO_ADMIN_PASSWORD = (
    "no password: set CHATQL_ADMIN_PASSWORD, or run create-admin at a terminal to be asked"
)
PASSWORDS_DIFFER = "the two passwords differ"


def admin_password(settings: Settings) -> str:
    """`CHATQL_ADMIN_PASSWORD`, else asked for twice at the terminal (without echo)."""
    if settings.admin_password:
        return settings.admin_password
    if not sys.stdin.isatty():
        raise CommandError(NO_ADMIN_PASSWORD, status=2)
    try:
        password = getpass.getpass("Password: ")
        again = getpass.getpass("Password again: ")
    except EOFError:
        raise CommandError(NO_ADMIN_PASSWORD, status=2) from None
    if password != again:
        raise CommandError(PASSWORDS_DIFFER, status=2)
    return password


async def _create_admin(settings: Settings, username: str, email: str, password: str) -> None:
    from db import users as user_data
    from schema.validation import password_problem, raise_for

    raise_for({"password": password_problem(password)})
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
    from schema.validation import email_problem, raise_for, username_problem

    try:
        # The names first: a typo in them is not worth typing a password twice.
        raise_for({"username": username_problem(args.username), "email": email_problem(args.email)})
        password = admin_password(settings)
        keep_secret_key(settings)
        asyncio.run(_create_admin(settings, args.username, args.email, password))
    except BadUserInput as exc:
        raise CommandError(str(exc), status=2) from exc
    except Conflict as exc:
        raise CommandError(str(exc)) from exc
    print(f"admin {args.username} created")
    return 0


async def _seed(settings: Settings, args: argparse.Namespace, progress: RowProgress) -> SeedCounts:
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
    try:
        return await seed(
            engine,
            plan=plan,
            hashed_password=await passwords.hash(args.password),
            reset=args.reset,
            progress=progress.update,
        )
    finally:
        progress.close()
        await engine.dispose()


def cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    from db.seed import NotEmpty
    from ops.progress import RowProgress
    from schema.validation import password_problem

    problem = password_problem(args.password)
    if problem:
        raise CommandError(f"--password {problem}", status=2)
    sizes = {
        "--users": args.users,
        "--conversations-per-user": args.conversations_per_user,
        "--messages-per-conversation": args.messages_per_conversation,
        "--mean-length": args.mean_length,
    }
    negative = [f"{option} must not be negative" for option, size in sizes.items() if size < 0]
    if negative:
        raise CommandError("; ".join(negative), status=2)
    keep_secret_key(settings)
    progress = RowProgress(sys.stderr)
    try:
        counts = asyncio.run(_seed(settings, args, progress))
    except NotEmpty as exc:
        raise CommandError(str(exc)) from exc
    seconds = progress.writing_seconds
    rows = counts.users + counts.conversations + counts.messages
    rate = f"{rows / seconds:,.0f}" if seconds else "-"
    print(
        f"seeded {counts.users:,} users, {counts.conversations:,} conversations and "
        f"{counts.messages:,} messages in {seconds:.2f} s ({rate} rows/s); "
        f"log in as user1..user{counts.users} with password {args.password!r} (user1 is an admin)"
    )
    return 0


def cmd_export_schema(_: Settings, __: argparse.Namespace) -> int:
    print(make_schema().as_str())
    return 0


HELP_EPILOG = """\
settings come from environment variables: DATABASE_URL (default: SQLite in ./data/chatql.db)
and CHATQL_* (see README.md, "Settings").

examples:
  python server.py                                   serve on 127.0.0.1:8000
  python server.py serve --port 9000 --reload        develop: restart when code changes
  DATABASE_URL=postgresql+asyncpg://u:p@db/chatql python server.py serve --workers 4
  python server.py export-schema > schema.graphql    regenerate the committed schema
"""


def _command(commands: Any, name: str, summary: str, details: str) -> argparse.ArgumentParser:
    command: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}. {details}",
    )
    return command


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return port


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="python server.py",
        description="chatql, a GraphQL API server for chat apps. With no command: serve.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = main.add_subparsers(dest="command", metavar="COMMAND")

    serve = _command(
        commands,
        "serve",
        "migrate, then serve the API (the default)",
        "The API and the GraphiQL explorer are at /graphql (HTTP and WebSocket); "
        "/healthz, /readyz and /metrics are for operators. Logs go to stdout, one JSON "
        "object a line unless stdout is a terminal (CHATQL_LOG_FORMAT).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port to bind (default 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (default 1; above 1 needs PostgreSQL, and metrics are then "
        "merged through PROMETHEUS_MULTIPROC_DIR, a temporary folder unless set)",
    )
    serve.add_argument(
        "--reload",
        action="store_true",
        help="development: restart when a .py file changes (one worker)",
    )
    serve.set_defaults(handler=cmd_serve)

    migrate = _command(
        commands,
        "migrate",
        "bring the database to the newest revision",
        "Runs the Alembic migrations in db/migrations; serve does this on start too.",
    )
    migrate.set_defaults(handler=cmd_migrate)

    admin = _command(
        commands,
        "create-admin",
        "create an admin account",
        "The password comes from CHATQL_ADMIN_PASSWORD, else is asked for twice at a "
        "terminal. Exits 2 on invalid input or no password, and 1 when the username or email "
        "is taken.",
    )
    admin.add_argument("username", help="3-50 letters, digits, '_', '.', '-'")
    admin.add_argument("email", help="the account's email address")
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

    export = _command(
        commands,
        "export-schema",
        "print the GraphQL SDL",
        "The committed schema.graphql is this output: "
        "python server.py export-schema > schema.graphql",
    )
    export.set_defaults(handler=cmd_export_schema)
    return main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No command, or options alone, is `serve`; an unknown word is argparse's "invalid choice".
    if not argv or (argv[0].startswith("-") and argv[0] not in {"-h", "--help"}):
        argv.insert(0, "serve")
    args = parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            print(f"error: {_setting_problem(error)}", file=sys.stderr)
        return 2
    logging.config.dictConfig(settings.log_config(stderr=args.command != "serve"))
    handler: Any = args.handler
    try:
        return int(handler(settings, args))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _setting_problem(error: Any) -> str:
    """One line naming the variable a setting came from and what is wrong with it."""
    name = str(error["loc"][0]) if error["loc"] else "?"
    variable = f"CHATQL_{name.upper()}" if name in Settings.model_fields else name
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{variable}: {message}"


if __name__ == "__main__":
    raise SystemExit(main())
