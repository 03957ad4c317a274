"""Ends the subscriptions of users who were deactivated or deleted.

Delivery checks the viewer too, but a quiet conversation may carry no event for hours: this
sweep asks the database about every subscribed viewer of the process in one statement.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import read_session
from db.users import inactive_user_ids
from realtime.background import stop
from realtime.hub import Hub

logger = logging.getLogger("chatql.realtime")


class ViewerWatch:
    def __init__(
        self, hub: Hub, sessionmaker: async_sessionmaker[AsyncSession], *, interval: float
    ) -> None:
        self.hub = hub
        self.sessionmaker = sessionmaker
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> None:
        viewer_ids = sorted(self.hub.viewer_ids())
        if not viewer_ids:
            return
        async with read_session(self.sessionmaker) as session:
            gone = await inactive_user_ids(session, ids=viewer_ids)
        if gone:
            self.hub.end_for_viewers(gone)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chatql-viewer-watch")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception:
                logger.exception("checking subscribed viewers failed; trying again later")
