"""The broker interface, its in-process backend, and the choice between the two backends.

    make_broker(url)
     ├── LocalBroker      SQLite (one process): delivers from the session's after_commit event
     └── PostgresBroker   PostgreSQL (any number of processes): NOTIFY in the transaction,
                          one LISTEN connection per process (realtime/postgres.py)

Both hand committed ids to the process's `Hub`, which fans them out by conversation, and the
heads of feeds that grew (`db.changes`), which it fans out by user.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from db.changes import on_local_commit
from db.engine import is_sqlite
from realtime.hub import Hub
from realtime.postgres import PostgresBroker


class Broker(Protocol):
    hub: Hub
    # PostgreSQL's NOTIFY channel, for a write that sends its NOTIFY from a statement it makes
    # anyway (`db.streams.append`); None: announce through `publish`.
    notify_channel: str | None

    async def publish(
        self, session: AsyncSession, *, conversation_id: str, message_ids: Sequence[int]
    ) -> None:
        """Announce new messages; called inside the writing transaction, delivered after commit.
        No `message_ids`: who may see the conversation changed (a transfer, a deletion), and
        its subscribers check again (`Hub.deliver`)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


PENDING = "chatql.realtime.pending"


class LocalBroker:
    """Delivers within this process once the writing transaction commits; never on rollback."""

    notify_channel: str | None = None

    def __init__(self, hub: Hub, database_url: str = "") -> None:
        self.hub = hub
        self.database_url = database_url
        self._feeds = contextlib.ExitStack()

    async def publish(
        self, session: AsyncSession, *, conversation_id: str, message_ids: Sequence[int]
    ) -> None:
        pending: list[tuple[str, tuple[int, ...]]] | None = session.info.get(PENDING)
        if pending is None:
            pending = session.info[PENDING] = []
            sync_session = session.sync_session

            def deliver(_: object) -> None:
                batches = list(pending)
                pending.clear()
                for conversation, ids in batches:
                    self.hub.deliver(conversation, ids)

            def forget(_: object) -> None:
                pending.clear()

            event.listen(sync_session, "after_commit", deliver)
            event.listen(sync_session, "after_rollback", forget)
        pending.append((conversation_id, tuple(message_ids)))

    async def start(self) -> None:
        if self.database_url:
            self._feeds.enter_context(on_local_commit(self.database_url, self.hub.deliver_feed))

    async def close(self) -> None:
        self._feeds.close()


def make_broker(database_url: str, *, queue_size: int) -> Broker:
    hub = Hub(queue_size)
    if is_sqlite(database_url):
        return LocalBroker(hub, database_url)
    return PostgresBroker(database_url, hub)
