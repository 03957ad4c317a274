"""The stream timeout (issue 15): a background task that marks silent streams FAILED.

Every `interval` seconds (a fifth of `CHATQL_STREAM_TIMEOUT`, between 0.05 s and 30 s) it
marks FAILED each STREAMING message with no append for the timeout (`db.streams.expire`:
content folded as by `finishMessage`), adds MESSAGE_FINISHED to its owner's feed and wakes its
`messageStream` subscribers, in one transaction. Started and stopped with the app, as the
change retention is. Every process runs it; the UPDATE's `status = 'STREAMING'` condition
makes two sweeps of one message finish it once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.changes import ChangeKind, NewChange, record
from db.engine import write_transaction
from db.models import utcnow
from db.streams import expire, stream_key
from realtime.background import stop
from realtime.broker import Broker

logger = logging.getLogger("chatql.streams")


class StreamTimeout:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], broker: Broker, *, seconds: float
    ) -> None:
        self.sessionmaker = sessionmaker
        self.broker = broker
        self.seconds = seconds
        self.interval = min(30.0, max(0.05, seconds / 5))
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """Fail the silent streams once now; how many there were."""
        async with write_transaction(self.sessionmaker) as session:
            failed = await expire(session, silent_since=utcnow() - timedelta(seconds=self.seconds))
            if not failed:
                return 0
            for message_id, _, _ in failed:
                await self.broker.publish(
                    session, conversation_id=stream_key(message_id), message_ids=[0]
                )
            await record(
                session,
                [
                    NewChange(owner, ChangeKind.MESSAGE_FINISHED, conversation_id, message_id)
                    for message_id, conversation_id, owner in failed
                ],
            )
        return len(failed)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chatql-stream-timeout")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                failed = await self.sweep()
                if failed:
                    logger.info("%d streams silent for %ss marked FAILED", failed, self.seconds)
            except Exception:
                logger.exception("the stream timeout sweep failed; trying again later")
