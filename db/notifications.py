"""PostgreSQL notifications, sent inside the caller's transaction (delivered on its commit)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession


async def notify(session: AsyncSession, *, channel: str, payloads: list[str]) -> None:
    """`NOTIFY channel, payload` for each payload, in order, in the session's transaction."""
    for payload in payloads:
        await session.execute(select(func.pg_notify(channel, payload)))
