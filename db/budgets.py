"""Data access for the shared cost budgets (`schema.budgets`): one row per budget key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, func
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import CostBudget

cost_budgets = cast(Table, CostBudget.__table__)


@dataclass(frozen=True)
class Shared:
    """A shared bucket: its tokens as of `updated`, and the total ever spent of it."""

    tokens: float
    updated: float
    spent: float


async def reconcile(
    session: AsyncSession, *, key: str, spent: float, now: float, burst: float, rate: float
) -> Shared:
    """Take `spent` from the shared bucket of `key`, refilled at `rate` a second up to
    `burst` since it was last updated (a full bucket when there is none), and add it to the
    total, in one statement that serialises on the row (PostgreSQL)."""
    table = cost_budgets
    insert = postgresql.insert(table).values(
        key=key, tokens=burst - spent, updated=now, spent=spent
    )
    refilled = func.least(burst, table.c.tokens + func.greatest(now - table.c.updated, 0.0) * rate)
    statement = insert.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={
            "tokens": refilled - spent,
            "updated": func.greatest(table.c.updated, now),
            "spent": table.c.spent + spent,
        },
    ).returning(table.c.tokens, table.c.updated, table.c.spent)
    row = (await session.execute(statement)).one()
    return Shared(float(row.tokens), float(row.updated), float(row.spent))
