"""Data access for automatic persisted queries: one row per query, keyed by its SHA-256.

The table is bounded: a row is served until it is `ttl` old, and each registration first
drops the expired rows and the oldest beyond the row limit.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import PersistedQuery, utcnow

persisted_queries = cast(Table, PersistedQuery.__table__)


async def get_persisted_query(
    session: AsyncSession, *, sha256: str, stored_since: datetime
) -> str | None:
    """The query, unless it was stored before `stored_since` (it has expired)."""
    statement = select(persisted_queries.c.query).where(
        persisted_queries.c.sha256 == sha256, persisted_queries.c.created_at >= stored_since
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def save_persisted_query(
    session: AsyncSession, *, sha256: str, query: str, max_rows: int, stored_since: datetime
) -> None:
    """Drop the rows stored before `stored_since` and the oldest beyond `max_rows - 1`, then
    store the query; when another process stored it first, keep theirs (the same text).

    Dropping comes first so that two processes registering at once delete in the same order
    and never wait on each other's new rows (no deadlock).
    """
    table = persisted_queries
    beyond = (
        select(table.c.sha256)
        .order_by(table.c.created_at.desc(), table.c.sha256.desc())
        .offset(max(max_rows - 1, 0))
    )
    await session.execute(
        delete(table).where(or_(table.c.created_at < stored_since, table.c.sha256.in_(beyond)))
    )
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(table)
        .values(sha256=sha256, query=query, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=[table.c.sha256])
    )
    await session.execute(statement)
