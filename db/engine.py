"""One engine and one sessionmaker per process, tuned for each backend.

SQLite transactions are begun by SQLAlchemy, not by the driver: pysqlite's legacy mode only
begins a transaction before the first INSERT/UPDATE/DELETE, so the reads a mutation makes
before it writes (who owns this conversation?) would run outside its transaction. A plain
BEGIN is deferred, though: a transaction that reads and then writes must upgrade its lock, and
in WAL mode that upgrade fails at once with "database is locked" when another writer committed
in between (the busy timeout does not apply). So a transaction that will write starts with
BEGIN IMMEDIATE (`write_transaction`), taking the write lock up front and queueing on the busy
timeout, while loaders' reads keep the deferred BEGIN and never wait for writers.

Faults (issue 11). Every wait on the database is bounded (`Timeouts`), and what goes wrong
while waiting leaves `write_transaction`, `read_session` and `idempotent_read` as
`db.errors.Unavailable`, raised from the driver's exception. A connection that broke is never
handed out again: one the driver knows to be closed is replaced at checkout (no round trip,
unlike `pool_pre_ping`), and one that fails as broken (asyncpg's protocol left mid-operation
by a FATAL error, say) is invalidated, and with it the pool's older connections, which a
server restart or `pg_terminate_backend` has usually broken too. `idempotent_read` then runs
a read once more on a fresh connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, ExceptionContext, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from db.errors import Unavailable, connection_lost, unavailable

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 10_000
# An execution option naming how a SQLite transaction begins.
SQLITE_BEGIN = "chatql_sqlite_begin"
# A read of one statement needs no BEGIN: the statement is its own consistent snapshot.
AUTOCOMMIT = "AUTOCOMMIT"
# How PostgreSQL lists the app's connections (pg_stat_activity.application_name).
APPLICATION_NAME = "chatql"
# The driver gives up this long after PostgreSQL's own statement_timeout should have fired:
# the server ends a slow statement cleanly, the driver only a server or network that went
# silent.
CLIENT_MARGIN_SECONDS = 1.0


@dataclass(frozen=True)
class Timeouts:
    """How long the database may keep a caller waiting, in seconds (None: no limit).

    `statement`: one statement. On PostgreSQL the server's `statement_timeout`, and asyncpg's
    `command_timeout` `CLIENT_MARGIN_SECONDS` later; on SQLite the busy timeout (how long a
    writer queues for the write lock; 10 s when None). `pool`: waiting for a pooled
    connection, and again for a new one to open.
    """

    statement: float | None = None
    pool: float | None = None

    def asyncpg_arguments(self) -> dict[str, Any]:
        """Keyword arguments for `asyncpg.connect` (and `asyncpg.create_pool`)."""
        server_settings = {"application_name": APPLICATION_NAME}
        arguments: dict[str, Any] = {"server_settings": server_settings}
        if self.statement:
            server_settings["statement_timeout"] = str(round(self.statement * 1000))
            arguments["command_timeout"] = self.statement + CLIENT_MARGIN_SECONDS
        if self.pool:
            arguments["timeout"] = self.pool
        return arguments

    @property
    def sqlite_busy_ms(self) -> int:
        return round(self.statement * 1000) if self.statement else SQLITE_BUSY_TIMEOUT_MS


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pre_ping: bool = True,
    timeouts: Timeouts | None = None,
) -> AsyncEngine:
    timeouts = timeouts or Timeouts()
    pool_timeout = {"pool_timeout": timeouts.pool} if timeouts.pool else {}
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url,
            connect_args={"timeout": timeouts.sqlite_busy_ms / 1000},
            pool_size=pool_size,
            max_overflow=max_overflow,
            **pool_timeout,
        )
        event.listen(
            engine.sync_engine,
            "connect",
            partial(_configure_sqlite, busy_timeout_ms=timeouts.sqlite_busy_ms),
        )
        event.listen(engine.sync_engine, "begin", _begin_sqlite)
    else:
        engine = create_async_engine(
            url,
            connect_args=timeouts.asyncpg_arguments(),
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_pre_ping=pre_ping,
            pool_recycle=1800,
            **pool_timeout,
        )
        event.listen(engine.sync_engine, "checkout", _refuse_closed)
    event.listen(engine.sync_engine, "handle_error", _invalidate_broken)
    return engine


def _refuse_closed(_: Any, record: ConnectionPoolEntry, __: PoolProxiedConnection) -> None:
    # The driver saw the socket close (the server restarted or ended the session): the pool
    # connects afresh instead of handing this one out.
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the connection was closed")


def _invalidate_broken(context: ExceptionContext) -> None:
    if context.is_disconnect:
        return
    error = context.original_exception
    # SQLAlchemy asks asyncpg whether the socket is closed; a connection can be broken before
    # that shows (a FATAL error read while idle leaves its protocol mid-operation).
    if connection_lost(error):
        context.is_disconnect = True
    # The driver gave up on a silent server mid-statement: this connection alone is suspect.
    elif isinstance(error, TimeoutError):
        context.is_disconnect = True
        context.invalidate_pool_on_disconnect = False


def _configure_sqlite(dbapi_connection: Any, _record: Any, *, busy_timeout_ms: int) -> None:
    # No BEGIN from the driver: `_begin_sqlite` emits it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_sqlite(connection: Connection) -> None:
    mode = connection.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
    if mode != AUTOCOMMIT:
        connection.exec_driver_sql(f"BEGIN {mode}")


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def write_transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session in a transaction that commits when the block ends and rolls back on error.

    On SQLite it begins IMMEDIATE, so it holds the one write lock from its first read on;
    elsewhere the option means nothing. Raises `Unavailable` when the database does not
    answer in time or the connection breaks, the COMMIT included (then whether it committed
    is unknown).
    """
    async with _translated():
        async with sessionmaker() as session, session.begin():
            await session.connection(execution_options={SQLITE_BEGIN: "IMMEDIATE"})
            yield session


@asynccontextmanager
async def read_session(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A short session for reads of one statement each (a loader batch, say).

    On SQLite it emits no BEGIN, which would double the statements a request costs; on
    PostgreSQL the driver's implicit transaction is as cheap as none. Raises `Unavailable`
    as `write_transaction` does; `idempotent_read` also tries a second connection.
    """
    async with _translated():
        async with sessionmaker() as session:
            await session.connection(execution_options=_read_options(session.bind))
            yield session


async def idempotent_read(
    sessionmaker: async_sessionmaker[AsyncSession],
    fetch: Callable[[AsyncSession], Awaitable[T]],
) -> T:
    """`fetch(session)` in a `read_session`, run once more on a fresh connection when the
    first one broke before answering: a read has no effect to repeat. A timeout is not
    retried (it would double the wait); both raise `Unavailable`."""
    try:
        async with read_session(sessionmaker) as session:
            return await fetch(session)
    except Unavailable as problem:
        if not problem.lost:
            raise
    async with read_session(sessionmaker) as session:
        return await fetch(session)


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    try:
        yield
    except Exception as error:
        problem = unavailable(error)
        if problem is None or problem is error:
            raise
        raise problem from error


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers a trivial query."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def make_reader(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for single-statement reads (loaders, the viewer) on the same pool as
    `make_sessionmaker`'s: autocommit, so no BEGIN and no ROLLBACK round trips."""
    return async_sessionmaker(
        engine.execution_options(**_read_options(engine)), expire_on_commit=False
    )


def _read_options(bind: Any) -> dict[str, Any]:
    # SQLite: no BEGIN of ours (the driver's own is off, see `_configure_sqlite`); changing the
    # isolation level there would turn the driver's implicit BEGIN back on when pooled.
    if bind is not None and bind.dialect.name == "sqlite":
        return {SQLITE_BEGIN: AUTOCOMMIT}
    return {"isolation_level": "AUTOCOMMIT"}
