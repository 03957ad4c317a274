"""Data access for automatic persisted queries: one row per query, keyed by its SHA-256."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import PersistedQuery, utcnow

persisted_queries = cast(Table, PersistedQuery.__table__)


async def get_persisted_query(session: AsyncSession, *, sha256: str) -> str | None:
    statement = select(persisted_queries.c.query).where(persisted_queries.c.sha256 == sha256)
    return (await session.execute(statement)).scalar_one_or_none()


async def save_persisted_query(session: AsyncSession, *, sha256: str, query: str) -> None:
    """Store a query; when another process stored it first, keep theirs (the same text)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(persisted_queries)
        .values(sha256=sha256, query=query, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=[persisted_queries.c.sha256])
    )
    await session.execute(statement)
