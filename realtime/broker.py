"""The broker interface and its in-process backend (SQLite: one process)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession


class Broker(Protocol):
    async def publish(
        self, session: AsyncSession, *, conversation_id: str, message_ids: Sequence[int]
    ) -> None:
        """Announce new messages; called inside the writing transaction, delivered after commit."""


class LocalBroker:
    """Delivers within this process once the writing transaction commits."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, tuple[int, ...]]] = []

    async def publish(
        self, session: AsyncSession, *, conversation_id: str, message_ids: Sequence[int]
    ) -> None:
        ids = tuple(message_ids)

        def deliver(_: object) -> None:
            self.delivered.append((conversation_id, ids))

        event.listen(session.sync_session, "after_commit", deliver, once=True)
