"""Retention of the change feed: changes older than a cutoff are deleted, in small batches.

A feed stays contiguous: for each user, pruning removes every change at or before some
position P and raises `feeds.pruned_through` to P, so what is kept is exactly the positions
`pruned_through + 1 .. head`, and a cursor at or past `pruned_through` still has all its
successors (a reader compares the two; an older cursor is `CURSOR_EXPIRED`). P is the last
position of that user among the oldest changes: since a change's `at` is taken just before its
writer waits for the feed's lock, positions follow `at` only roughly, and the few changes below
P that are a moment younger than the cutoff go too (never one above P).

Each batch is one short transaction: read up to `batch_size` of the oldest changes (index
`ix_changes_at`) and their users' P, delete those users' changes through P (one statement, an
index range per user), and raise their `pruned_through` (one statement per user, in user
order, as writers lock feeds, so pruning never deadlocks with writers; a writer of one of the
batch's users waits at most for the end of one batch). On PostgreSQL a transaction-scoped
advisory lock lets one process prune at a time.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import write_transaction
from db.models import Change, Feed

changes = cast(Table, Change.__table__)
feeds = cast(Table, Feed.__table__)
BATCH_SIZE = 1000

# Any number that no other advisory lock of ours uses: held by the process pruning now.
ADVISORY_KEY = 0x63686174716C  # "chatql"
# Each user's changes through their P: one index range of the primary key per user (a single
# `position <= CASE user_id ...` over many users cannot use one, and held its locks for seconds
# on a batch of 1,000 users; bench/README.md, "Sync").
_DELETE_POSTGRES = text(
    """
    DELETE FROM changes AS c
    USING unnest(CAST(:users AS integer[]), CAST(:positions AS bigint[])) AS e(u, p)
    WHERE c.user_id = e.u AND c.position <= e.p
    """
)
_DELETE_SQLITE = text(
    """
    DELETE FROM changes WHERE rowid IN (
        SELECT c.rowid FROM json_each(:ends) AS e
        JOIN changes AS c
          ON c.user_id = json_extract(e.value, '$[0]')
         AND c.position <= json_extract(e.value, '$[1]')
    )
    """
)
_RAISE = (
    update(feeds)
    .where(feeds.c.user_id == bindparam("u"))
    .values(
        pruned_through=case(
            (feeds.c.pruned_through < bindparam("p"), bindparam("p")),
            else_=feeds.c.pruned_through,
        )
    )
)


async def _prune_batch(session: AsyncSession, cutoff: datetime, batch_size: int) -> int:
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        # One pruner at a time across processes (two deleting the same rows in different
        # orders could deadlock); the others find it taken and wait for their next round.
        taken = select(func.pg_try_advisory_xact_lock(ADVISORY_KEY))
        if not (await session.execute(taken)).scalar():
            return 0
    oldest = (
        select(changes.c.user_id, changes.c.position)
        .where(changes.c.at < cutoff)
        .order_by(changes.c.at)
        .limit(batch_size)
        .subquery()
    )
    through = select(oldest.c.user_id, func.max(oldest.c.position)).group_by(oldest.c.user_id)
    ends = sorted((int(user), int(position)) for user, position in await session.execute(through))
    if not ends:
        return 0
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        deleted = await session.execute(
            _DELETE_POSTGRES,
            {"users": [user for user, _ in ends], "positions": [p for _, p in ends]},
        )
    else:
        deleted = await session.execute(_DELETE_SQLITE, {"ends": json.dumps(ends)})
    # In user order, as writers lock feeds (`db.changes.record`).
    params: list[dict[str, Any]] = [{"u": user, "p": position} for user, position in ends]
    await session.execute(_RAISE, params)
    return int(deleted.rowcount)  # type: ignore[attr-defined]


async def prune_changes(
    sessionmaker: async_sessionmaker[AsyncSession],
    cutoff: datetime,
    *,
    batch_size: int = BATCH_SIZE,
) -> int:
    """Delete the changes written before `cutoff` (an aware datetime), batch by batch, each in
    its own short transaction, raising `pruned_through` as it goes (see the module docstring);
    returns how many changes were deleted. Safe to run from several processes at once."""
    total = 0
    while True:
        async with write_transaction(sessionmaker) as session:
            count = await _prune_batch(session, cutoff, batch_size)
        if count == 0:
            return total
        total += count
