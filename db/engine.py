"""One engine and one sessionmaker per process, tuned for each backend.

SQLite transactions are begun by SQLAlchemy, not by the driver: pysqlite's legacy mode only
begins a transaction before the first INSERT/UPDATE/DELETE, so the reads a mutation makes
before it writes (who owns this conversation?) would run outside its transaction. A plain
BEGIN is deferred, though: a transaction that reads and then writes must upgrade its lock, and
in WAL mode that upgrade fails at once with "database is locked" when another writer committed
in between (the busy timeout does not apply). So a transaction that will write starts with
BEGIN IMMEDIATE (`write_transaction`), taking the write lock up front and queueing on the busy
timeout, while loaders' reads keep the deferred BEGIN and never wait for writers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BUSY_TIMEOUT_MS = 10_000
# An execution option naming how a SQLite transaction begins.
SQLITE_BEGIN = "chatql_sqlite_begin"
# A read of one statement needs no BEGIN: the statement is its own consistent snapshot.
AUTOCOMMIT = "AUTOCOMMIT"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 10, pre_ping: bool = True
) -> AsyncEngine:
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=pool_size,
            max_overflow=max_overflow,
        )
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        event.listen(engine.sync_engine, "begin", _begin_sqlite)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
    )


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # No BEGIN from the driver: `_begin_sqlite` emits it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
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
    elsewhere the option means nothing.
    """
    async with sessionmaker() as session, session.begin():
        await session.connection(execution_options={SQLITE_BEGIN: "IMMEDIATE"})
        yield session


@asynccontextmanager
async def read_session(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A short session for reads of one statement each (a loader batch, say).

    On SQLite it emits no BEGIN, which would double the statements a request costs; on
    PostgreSQL the driver's implicit transaction is as cheap as none.
    """
    async with sessionmaker() as session:
        await session.connection(execution_options=_read_options(session.bind))
        yield session


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
