"""Reads of one statement each, as cheaply as the database allows.

A loader batch or the viewer's row is one SELECT. Through an ORM session it costs a session,
a pooled connection checked out and in, a greenlet hop and SQLAlchemy's result machinery:
some 0.5 ms of CPU, three times what the statement costs asyncpg itself. On PostgreSQL with
asyncpg, `DriverReads` therefore runs the statements on a pool of its own, straight on the
driver: each statement is compiled by SQLAlchemy once, and its rows are asyncpg records that
answer attribute access as SQLAlchemy's rows do. The connections are autocommit (no BEGIN, no
ROLLBACK) and skip the reset query on release, since reads leave no state behind.

Elsewhere (SQLite) `SessionReads` runs the same statements in a read session. The statements
are written once, for both: lists of keys are bound as one array (`one_of`), which PostgreSQL
reads as `= ANY(...)` and SQLite as an expanding `IN (...)`.

Both raise `db.errors.Unavailable` when the database does not answer in time or the
connection breaks, after running a read whose connection broke once more on a fresh one (see
`db.engine`). A connection that failed as broken is closed before it goes back to the pool:
its reset query is skipped, so nothing else would notice, and the next read would be handed
a connection whose protocol is stuck mid-operation ("cannot switch to state ...").
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg
from sqlalchemy import ColumnElement, Executable, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import KeyedColumnElement

from db.engine import Timeouts, idempotent_read
from db.errors import Unavailable, connection_lost, unavailable

NO_SPAN = contextlib.nullcontext()
T = TypeVar("T")


class Reads(Protocol):
    dialect: str

    async def all(self, statement: Executable, values: Mapping[str, Any]) -> Sequence[Any]: ...

    async def first(self, statement: Executable, values: Mapping[str, Any]) -> Any | None: ...


def one_of(column: KeyedColumnElement[Any], name: str, dialect: str) -> ColumnElement[bool]:
    """`column` is one of the list bound as `name`."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


class SessionReads:
    """Each read in a short read session of its own."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker
        bind = sessionmaker.kw.get("bind")
        self.dialect = bind.dialect.name if bind is not None else ""

    async def all(self, statement: Executable, values: Mapping[str, Any]) -> Sequence[Any]:
        async def fetch(session: AsyncSession) -> Sequence[Any]:
            return (await session.execute(statement, dict(values))).all()

        return await idempotent_read(self.sessionmaker, fetch)

    async def first(self, statement: Executable, values: Mapping[str, Any]) -> Any | None:
        async def fetch(session: AsyncSession) -> Any | None:
            return (await session.execute(statement, dict(values))).first()

        return await idempotent_read(self.sessionmaker, fetch)


class Record(asyncpg.Record):  # type: ignore[misc]
    """An asyncpg record that reads like SQLAlchemy's `Row`: `row.title`, `row._fields`."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def _fields(self) -> tuple[str, ...]:
        return tuple(self.keys())


class _Quiet(asyncpg.Connection):  # type: ignore[misc]
    def get_reset_query(self) -> str:
        return ""


async def fetch_once(connection: Any, sql: str, arguments: Sequence[Any]) -> list[Any]:
    """`sql`'s rows without keeping its text in asyncpg's statement cache (100 statements a
    connection, least recently used out): a text that varies with each request (a search's
    literal) would push the hot statements out of it, to be prepared again. The same two
    round trips as a cache miss (`Connection.prepare` does not cache)."""
    statement = await connection.prepare(sql)
    rows: list[Any] = await statement.fetch(*arguments)
    return rows


@dataclass(frozen=True)
class Prepared:
    """A statement compiled for asyncpg once: its SQL with `$n` placeholders, and the name of
    each placeholder's value in order, with the value it takes when none is given (literals
    of the statement)."""

    sql: str
    parameters: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, statement: Executable, dialect: Dialect) -> Prepared:
        compiled: Any = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        names: Sequence[str] = compiled.positiontup or ()
        binds = compiled.binds
        return cls(str(compiled), tuple((name, binds[name].effective_value) for name in names))


class DriverReads:
    """Reads straight on asyncpg, on a pool of their own."""

    dialect = "postgresql"

    def __init__(self, engine: AsyncEngine, *, size: int, timeouts: Timeouts | None = None) -> None:
        self._engine = engine
        self._size = size
        self._timeouts = timeouts or Timeouts()
        self._pool: asyncpg.Pool | None = None
        self._compiled: dict[Executable, Prepared] = {}
        # Called with each statement's SQL before it runs (metrics, the tests' counters).
        self.listeners: list[Callable[[str], None]] = []
        # Tracing alone (`app.tracing`): what each statement runs inside, given its SQL.
        self.statement_span: Callable[[str], contextlib.AbstractContextManager[None]] | None = None

    async def start(self) -> None:
        url = self._engine.url.set(drivername="postgresql")
        self._pool = await asyncpg.create_pool(
            url.render_as_string(hide_password=False),
            min_size=0,  # connects on first use: the app starts without its database
            max_size=self._size,
            connection_class=_Quiet,
            # No idle timer per released connection: its handle would copy the context of
            # the request that released it, and keep it alive for minutes.
            max_inactive_connection_lifetime=0,
            record_class=Record,
            **self._timeouts.asyncpg_arguments(),
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    def _arguments(self, statement: Executable, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
        prepared = self._compiled.get(statement)
        if prepared is None:
            prepared = self._compiled[statement] = Prepared.of(statement, self._engine.dialect)
        for listener in self.listeners:
            listener(prepared.sql)
        return prepared.sql, [
            values[name] if name in values else default for name, default in prepared.parameters
        ]

    async def all(self, statement: Executable, values: Mapping[str, Any]) -> Sequence[Any]:
        sql, arguments = self._arguments(statement, values)
        rows: list[Any] = await self._run(sql, lambda connection: connection.fetch(sql, *arguments))
        return rows

    async def first(self, statement: Executable, values: Mapping[str, Any]) -> Any | None:
        sql, arguments = self._arguments(statement, values)
        return await self._run(sql, lambda connection: connection.fetchrow(sql, *arguments))

    async def all_sql(self, sql: str, arguments: Sequence[Any]) -> Sequence[Any]:
        """`sql` as given (`$n` placeholders for `arguments`): for a statement whose text
        varies with a literal the planner must see (`db.search`), which `all` would compile
        and keep once per text."""
        for listener in self.listeners:
            listener(sql)
        rows: list[Any] = await self._run(
            sql, lambda connection: fetch_once(connection, sql, arguments)
        )
        return rows

    async def _run(self, sql: str, fetch: Callable[[Any], Awaitable[T]]) -> T:
        """`fetch(connection)` on a pooled connection; once more on a new one when the first
        broke before answering. Inside the statement's span when tracing is on."""
        span = self.statement_span
        with span(sql) if span is not None else NO_SPAN:
            try:
                return await self._once(fetch)
            except Unavailable as problem:
                if not problem.lost:
                    raise
            return await self._once(fetch)

    async def _once(self, fetch: Callable[[Any], Awaitable[T]]) -> T:
        # The pool's timeout bounds the wait for a connection and, on release, the wait for a
        # cancelled statement to end (past it asyncpg closes the connection).
        assert self._pool is not None, "DriverReads.start() was not awaited"
        try:
            async with self._pool.acquire(timeout=self._timeouts.pool) as connection:
                try:
                    return await fetch(connection)
                except Exception as error:
                    lost = connection_lost(error)
                    # Broken, or gone silent mid-statement (asyncpg's command timeout): not
                    # worth waiting for, and never to be handed out again.
                    if lost or isinstance(error, TimeoutError):
                        with contextlib.suppress(asyncpg.InterfaceError):  # closed already
                            connection.terminate()
                    if lost:
                        # What broke one connection (a restart, pg_terminate_backend) has
                        # usually broken its idle siblings too: each is replaced when next
                        # acquired, as SQLAlchemy's pool does on a disconnect.
                        await self._pool.expire_connections()
                    raise
        except Exception as error:
            problem = unavailable(error)
            if problem is None or problem is error:
                raise
            raise problem from error


class ViewerChanged(Exception):
    """The viewer a request took from the process's cache no longer matches its row."""


@dataclass
class ViewerGuard:
    """A viewer taken on trust from the process's cache, to be checked by the request's first
    read: `image` is the md5 of the row's text (`VIEWER_IMAGE`) when it was cached; `held` is
    None until a statement checked it, then whether the row is still that one."""

    user_id: int
    image: str
    held: bool | None = None


# Column names the guarded statement adds after the statement's own columns.
HELD, PRESENT = "chatql_viewer_held", "chatql_row_present"
# The text of a users row, hashed: any change to any column of the account changes it.
VIEWER_IMAGE = "md5(users::text)"


def _guarded_sql(sql: str, arguments: int) -> str:
    """`sql` with the viewer's check in the same statement: every row of `sql` when the row of
    user `$n+1` still hashes to `$n+2`, else one row whose HELD column is false. The rows of
    `sql` come in its order (a lateral subquery of one outer row keeps it)."""
    user, image = arguments + 1, arguments + 2
    return (
        f"SELECT q.*, g.held AS {HELD} FROM (SELECT EXISTS (SELECT FROM users"
        f" WHERE users.id = ${user} AND {VIEWER_IMAGE} = ${image}) AS held) g"
        f" LEFT JOIN LATERAL (SELECT o.*, true AS {PRESENT} FROM ({sql}) o) q ON g.held"
    )


class GuardedReads:
    """`DriverReads` for one request whose viewer came from the process's cache: its first
    statements carry the viewer's check (`_guarded_sql`) until one has run, so a screen is one
    statement, viewer included. Raises `ViewerChanged` once the check failed; the fast lane
    then looks the viewer up again and answers the usual way (`schema.context`)."""

    dialect = "postgresql"

    def __init__(self, reads: DriverReads, guard: ViewerGuard) -> None:
        self.reads = reads
        self.guard = guard
        self._sql: dict[str, str] = {}

    async def all(self, statement: Executable, values: Mapping[str, Any]) -> Sequence[Any]:
        guard = self.guard
        if guard.held:
            return await self.reads.all(statement, values)
        if guard.held is False:
            raise ViewerChanged()
        sql, arguments = self.reads._arguments(statement, values)
        guarded = _GUARDED.get(sql)
        if guarded is None:
            guarded = _GUARDED[sql] = _guarded_sql(sql, len(arguments))
        return await self._checked(guarded, arguments)

    async def all_sql(self, sql: str, arguments: Sequence[Any]) -> Sequence[Any]:
        """`DriverReads.all_sql`, the viewer's check in the statement until one has run (its
        text varies: not kept in `_GUARDED`)."""
        guard = self.guard
        if guard.held:
            return await self.reads.all_sql(sql, arguments)
        if guard.held is False:
            raise ViewerChanged()
        for listener in self.reads.listeners:
            listener(sql)
        return await self._checked(_guarded_sql(sql, len(arguments)), list(arguments), once=True)

    async def _checked(
        self, guarded: str, arguments: list[Any], *, once: bool = False
    ) -> Sequence[Any]:
        """`once`: a text run once (`all_sql`), kept out of the connection's statement cache."""
        guard = self.guard
        arguments += [guard.user_id, guard.image]
        rows: list[Any] = await self.reads._run(
            guarded,
            (lambda connection: fetch_once(connection, guarded, arguments))
            if once
            else (lambda connection: connection.fetch(guarded, *arguments)),
        )
        held = bool(rows[0][HELD])
        if guard.held is None:
            guard.held = held
        if not held:
            raise ViewerChanged()
        return [row for row in rows if row[PRESENT]]

    async def first(self, statement: Executable, values: Mapping[str, Any]) -> Any | None:
        if self.guard.held:
            return await self.reads.first(statement, values)
        rows = await self.all(statement, values)
        return rows[0] if rows else None


# The guarded text of each statement's SQL (as few as there are statements).
_GUARDED: dict[str, str] = {}


def make_reads(
    engine: AsyncEngine,
    reader: async_sessionmaker[AsyncSession],
    *,
    size: int,
    timeouts: Timeouts | None = None,
) -> DriverReads | SessionReads:
    """`DriverReads` where the engine speaks asyncpg, else `SessionReads` over `reader` (whose
    engine has the timeouts already)."""
    if engine.url.get_driver_name() == "asyncpg":
        return DriverReads(engine, size=size, timeouts=timeouts)
    return SessionReads(reader)
