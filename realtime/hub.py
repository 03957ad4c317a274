"""Fan-out within one process: each subscriber has a bounded queue of committed message ids.

Delivery never waits on a subscriber: a queue that is full means its consumer has fallen
behind, and that subscription is ended with `SubscriberTooSlow` (its queued events are dropped)
instead of letting memory grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

logger = logging.getLogger("chatql.realtime")


class SubscriptionEnded(Exception):
    """The subscription was ended by the server; the subclass says why."""


class SubscriberTooSlow(SubscriptionEnded):
    def __init__(self, queue_size: int) -> None:
        super().__init__(f"fell more than {queue_size} events behind")
        self.queue_size = queue_size


class ViewerGone(SubscriptionEnded):
    def __init__(self, viewer_id: int) -> None:
        super().__init__(f"user {viewer_id} is deactivated or deleted")
        self.viewer_id = viewer_id


@dataclass(frozen=True)
class Batch:
    """Messages one transaction added to one conversation, in the order they were written."""

    conversation_id: str
    message_ids: tuple[int, ...]


class Subscription:
    def __init__(self, conversation_id: str, viewer_id: int, queue_size: int) -> None:
        self.conversation_id = conversation_id
        self.viewer_id = viewer_id
        self.queue_size = queue_size
        # One spare slot so that the reason for ending always fits.
        self._queue: asyncio.Queue[Batch | SubscriptionEnded] = asyncio.Queue(queue_size + 1)
        self.ended: SubscriptionEnded | None = None

    def offer(self, batch: Batch) -> bool:
        """Queue a batch; False (and the subscription ended) when the consumer is too slow."""
        if self.ended is not None:
            return False
        if self._queue.qsize() >= self.queue_size:
            self.end(SubscriberTooSlow(self.queue_size))
            return False
        self._queue.put_nowait(batch)
        return True

    def end(self, reason: SubscriptionEnded) -> None:
        if self.ended is not None:
            return
        self.ended = reason
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(reason)

    async def next_batch(self) -> Batch:
        """The next batch; raises the reason once the subscription has been ended."""
        item = await self._queue.get()
        if isinstance(item, SubscriptionEnded):
            self._queue.put_nowait(item)
            raise item
        return item


class Hub:
    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self._by_conversation: dict[str, set[Subscription]] = {}

    @property
    def subscriber_count(self) -> int:
        return sum(len(group) for group in self._by_conversation.values())

    def viewer_ids(self) -> set[int]:
        return {s.viewer_id for group in self._by_conversation.values() for s in group}

    def deliver(self, conversation_id: str, message_ids: Sequence[int]) -> None:
        group = self._by_conversation.get(conversation_id)
        if not group or not message_ids:
            return
        batch = Batch(conversation_id, tuple(message_ids))
        for subscription in list(group):
            if not subscription.offer(batch):
                logger.warning(
                    "ending a subscription to %s of user %s: %s",
                    conversation_id,
                    subscription.viewer_id,
                    subscription.ended,
                )
                self._remove(subscription)

    def end_for_viewers(self, viewer_ids: Iterable[int]) -> None:
        gone = set(viewer_ids)
        for group in list(self._by_conversation.values()):
            for subscription in list(group):
                if subscription.viewer_id in gone:
                    subscription.end(ViewerGone(subscription.viewer_id))
                    self._remove(subscription)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, conversation_id: str, *, viewer_id: int
    ) -> AsyncIterator[Subscription]:
        subscription = Subscription(conversation_id, viewer_id, self.queue_size)
        self._by_conversation.setdefault(conversation_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            self._remove(subscription)

    def _remove(self, subscription: Subscription) -> None:
        group = self._by_conversation.get(subscription.conversation_id)
        if group is None:
            return
        group.discard(subscription)
        if not group:
            del self._by_conversation[subscription.conversation_id]
