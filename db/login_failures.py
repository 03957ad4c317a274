"""Login and sign-up attempts, kept in the database so that every server process counts the
same ones.

Each row is one attempt from one client address, under a login key (`schema.login_limits`
says which), of one kind: `failure` (a login whose password is not known to be right),
`login` (one that turned out right) or `signup`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import LoginFailure

login_failures = cast(Table, LoginFailure.__table__)

FAILURE: Final = "failure"
LOGIN: Final = "login"
SIGNUP: Final = "signup"


@dataclass(frozen=True)
class Tally:
    """Which attempts to count: those of `kinds`, under one login key or from one address."""

    kinds: tuple[str, ...]
    login: str | None = None
    client_address: str | None = None


@dataclass(frozen=True)
class FailureCount:
    """Attempts since some moment, and the oldest of them (None when there are none)."""

    count: int
    oldest: datetime | None


async def record_login_failure(
    session: AsyncSession, *, login: str, client_address: str, at: datetime, kind: str = FAILURE
) -> int:
    """Write down one attempt; its row id."""
    statement = (
        insert(login_failures)
        .values(login=login, client_address=client_address, failed_at=at, kind=kind)
        .returning(login_failures.c.id)
    )
    return int((await session.execute(statement)).scalar_one())


async def forget_login_failure(session: AsyncSession, *, failure_id: int) -> None:
    await session.execute(delete(login_failures).where(login_failures.c.id == failure_id))


async def mark_login_failure(session: AsyncSession, *, failure_id: int, kind: str) -> None:
    """Change what an attempt turned out to be (a failure that was a good login, say)."""
    statement = update(login_failures).where(login_failures.c.id == failure_id).values(kind=kind)
    await session.execute(statement)


async def prune_login_failures(session: AsyncSession, *, before: datetime) -> None:
    await session.execute(delete(login_failures).where(login_failures.c.failed_at < before))


async def count_login_failures(
    session: AsyncSession, *, tallies: Sequence[Tally], since: datetime
) -> list[FailureCount]:
    """For each tally, the attempts since `since` and the oldest of them, in one query."""

    def recent(tally: Tally, aggregate: Any) -> Any:
        where = [login_failures.c.failed_at >= since, login_failures.c.kind.in_(tally.kinds)]
        if tally.login is not None:
            where.append(login_failures.c.login == tally.login)
        if tally.client_address is not None:
            where.append(login_failures.c.client_address == tally.client_address)
        return select(aggregate).where(*where).scalar_subquery()

    # min() keeps the column's type, so the oldest moments come back as aware datetimes.
    columns = [
        column
        for tally in tallies
        for column in (
            recent(tally, func.count()),
            recent(tally, func.min(login_failures.c.failed_at)),
        )
    ]
    row = (await session.execute(select(*columns))).one()
    return [FailureCount(count=int(row[2 * i]), oldest=row[2 * i + 1]) for i in range(len(tallies))]
