"""The background task that keeps the change feed to its retention (`CHATQL_CHANGE_RETENTION`).

Every `interval` seconds (a tenth of the retention, between 0.1 s and a minute; the first time
one interval after start-up) it prunes what is older than the retention with
`db.retention.prune_changes`: short batched transactions, never a long lock. Started and
stopped with the app, as the viewer watch is.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import utcnow
from db.retention import prune_changes
from realtime.background import stop

logger = logging.getLogger("chatql.retention")


class ChangeRetention:
    """`seconds` 0 keeps every change (no task runs)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, seconds: int) -> None:
        self.sessionmaker = sessionmaker
        self.seconds = seconds
        self.interval = min(60.0, max(0.1, seconds / 10))
        self._task: asyncio.Task[None] | None = None

    async def prune(self) -> int:
        """Prune once now; how many changes went."""
        return await prune_changes(self.sessionmaker, utcnow() - timedelta(seconds=self.seconds))

    def start(self) -> None:
        if self.seconds > 0:
            self._task = asyncio.create_task(self._run(), name="chatql-change-retention")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def _run(self) -> None:
        # The first round after one interval, as the viewer watch does: start-up stays quick.
        while True:
            await asyncio.sleep(self.interval)
            try:
                pruned = await self.prune()
                if pruned:
                    logger.info("pruned %d changes older than %d seconds", pruned, self.seconds)
            except Exception:
                logger.exception("pruning the change feed failed; trying again later")
