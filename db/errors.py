"""Errors the data layer raises, so that callers never see a driver's exception type.

DataError
 ├── Conflict      a unique value is taken (decided by the database's constraint)
 └── Unavailable   the database did not answer in time, or the connection to it broke

`unavailable(exc)` reads a driver's or the pool's exception (SQLAlchemy's, asyncpg's,
sqlite3's) as an `Unavailable`, which is then raised `from` it, as httpx translates the
exceptions of the libraries below it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import asyncpg
from sqlalchemy import exc as sa_exc

# Seconds a client is told to wait before sending the same request again.
RETRY_AFTER_SECONDS = 1


class DataError(Exception):
    pass


class Conflict(DataError):
    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field

    def __str__(self) -> str:
        return f"{self.field} is already taken"


class Unavailable(DataError):
    """The database did not answer in time (`lost` False), or the connection broke before it
    answered (`lost` True: a read may be run again on another connection). Either way a
    write's outcome is unknown to the caller; sending the same request again later is safe
    for a read, and for a write that is idempotent (a `sendMessage` with its `clientId`)."""

    def __init__(self, reason: str, *, lost: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.lost = lost
        self.retry_after = RETRY_AFTER_SECONDS

    def __str__(self) -> str:
        return f"the database is unavailable: {self.reason}"


UNIQUE_FIELDS = {
    # PostgreSQL names the index, SQLite the indexed column.
    "uq_users_username_key": "username",
    "users.username_key": "username",
    "uq_users_email_key": "email",
    "users.email_key": "email",
}

# The server ended the session or cannot take it (SQLSTATE class 08, 57P01-57P03), or the
# socket broke: nothing more can be read from the connection.
_LOST = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    # asyncpg's protocol in a state no query can start from ("cannot switch to state 12;
    # another operation (2) is in progress"): a connection that was sent a FATAL error while
    # idle, whose socket has not been seen to close yet.
    asyncpg.exceptions.InternalClientError,
    sa_exc.DisconnectionError,
    OSError,
)
# Waited too long: statement_timeout or lock_timeout (57014, 55P03), no connection slot on
# the server (53300), asyncpg's command or pool timeout, SQLAlchemy's pool timeout.
_BUSY = (
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.TooManyConnectionsError,
    sa_exc.TimeoutError,
    TimeoutError,
)
# SQLite's busy timeout passed while another connection held the write lock.
_SQLITE_BUSY = ("database is locked", "database table is locked")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what SQLAlchemy wrapped (`orig`) and what adapters re-raised (`__cause__`)."""
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return
        yield current
        current = getattr(current, "orig", None) or current.__cause__


def unavailable(exc: BaseException) -> Unavailable | None:
    """`exc` read as the database being unavailable, or None when it is anything else."""
    for cause in _causes(exc):
        if isinstance(cause, Unavailable):
            return cause
        if isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
            return Unavailable(_describe(cause), lost=True)
        if isinstance(cause, asyncpg.InterfaceError) and "connection is closed" in str(cause):
            return Unavailable(_describe(cause), lost=True)
        # Before `_LOST`: TimeoutError is an OSError.
        if isinstance(cause, _BUSY) or (
            isinstance(cause, sqlite3.OperationalError) and str(cause) in _SQLITE_BUSY
        ):
            return Unavailable(_describe(cause))
        if isinstance(cause, _LOST):
            return Unavailable(_describe(cause), lost=True)
    return None


def connection_lost(exc: BaseException) -> bool:
    """The connection that raised `exc` can serve nothing more and must be discarded."""
    found = unavailable(exc)
    return found is not None and found.lost


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def conflicting_field(exc: BaseException) -> str | None:
    """The input field behind a unique violation, read from the constraint it names."""
    text = str(getattr(exc, "orig", exc))
    for constraint, name in UNIQUE_FIELDS.items():
        if constraint in text:
            return name
    return None
