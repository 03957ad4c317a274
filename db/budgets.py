"""Data access for the shared cost budgets (`schema.budgets`): one row per budget key."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, func
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import CostBudget

cost_budgets = cast(Table, CostBudget.__table__)


async def reconcile(
    session: AsyncSession, *, key: str, spent: float, now: float, burst: float, rate: float
) -> tuple[float, float]:
    """Take `spent` from the shared bucket of `key`, refilled at `rate` a second up to
    `burst` since it was last updated (a full bucket when there is none), in one statement
    that serialises on the row; the bucket's tokens and time after it (PostgreSQL)."""
    table = cost_budgets
    insert = postgresql.insert(table).values(key=key, tokens=burst - spent, updated=now)
    refilled = func.least(burst, table.c.tokens + func.greatest(now - table.c.updated, 0.0) * rate)
    statement = insert.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={
            "tokens": refilled - spent,
            "updated": func.greatest(table.c.updated, now),
        },
    ).returning(table.c.tokens, table.c.updated)
    row = (await session.execute(statement)).one()
    return float(row.tokens), float(row.updated)
