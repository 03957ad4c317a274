"""Failed logins, kept in the database so that every server process counts the same ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import LoginFailure

login_failures = cast(Table, LoginFailure.__table__)


@dataclass(frozen=True)
class FailureCount:
    """Failures since some moment, and the oldest of them (None when there are none)."""

    count: int
    oldest: datetime | None


async def record_login_failure(
    session: AsyncSession, *, login: str, client_address: str, at: datetime
) -> int:
    statement = (
        insert(login_failures)
        .values(login=login, client_address=client_address, failed_at=at)
        .returning(login_failures.c.id)
    )
    return int((await session.execute(statement)).scalar_one())


async def forget_login_failure(session: AsyncSession, *, failure_id: int) -> None:
    await session.execute(delete(login_failures).where(login_failures.c.id == failure_id))


async def prune_login_failures(session: AsyncSession, *, before: datetime) -> None:
    await session.execute(delete(login_failures).where(login_failures.c.failed_at < before))


async def count_login_failures(
    session: AsyncSession, *, login: str, client_address: str, since: datetime
) -> tuple[FailureCount, FailureCount]:
    """Failures since `since` for this login name and for this client address, in one query."""

    def recent(column: Any, value: str, aggregate: Any) -> Any:
        return (
            select(aggregate)
            .where(column == value, login_failures.c.failed_at >= since)
            .scalar_subquery()
        )

    failed_at = login_failures.c.failed_at
    by_name, by_address = login_failures.c.login, login_failures.c.client_address
    # min() keeps the column's type, so the oldest moments come back as aware datetimes.
    statement = select(
        recent(by_name, login, func.count()),
        recent(by_name, login, func.min(failed_at)),
        recent(by_address, client_address, func.count()),
        recent(by_address, client_address, func.min(failed_at)),
    )
    name_count, name_oldest, address_count, address_oldest = (
        await session.execute(statement)
    ).one()
    return (
        FailureCount(count=int(name_count), oldest=name_oldest),
        FailureCount(count=int(address_count), oldest=address_oldest),
    )
