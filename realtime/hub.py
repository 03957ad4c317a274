"""Fan-out within one process: each subscriber has a bounded queue of committed message ids
(`messageAdded`, by conversation) or of feed heads (`changes`, by user).

Delivery never waits on a subscriber: a queue that is full means its consumer has fallen
behind, and that subscription is ended with `SubscriberTooSlow` (its queued events are dropped)
instead of letting memory grow.

A feed subscriber's queue holds wake-ups, not content: "the feed has grown to position P"
(`deliver_feed`) or "notifications may have been lost: read again" (`resync`, sent when the
LISTEN connection comes back). Its consumer reads the feed after the last position it
delivered, so a lost or merged wake-up costs nothing as long as a later one arrives.

Loading once per event, not per subscriber (issue 17, item 1): all subscribers of one
conversation's event share its `Batch` and its `Shared` memo, and the feed wake-ups of one turn
of the event loop share one round (`Wake.round`), through which the schema loads what they
need together. The hub itself reads nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from db.deadline import hold_until_done

logger = logging.getLogger("chatql.realtime")

T = TypeVar("T")


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


class Shared:
    """What the subscribers of one event load once (issue 17, item 1): the first subscriber to
    ask for `key` starts its load, every later one awaits the same answer, so one event to N
    subscribers costs each load's statements once, not N times. Lives as long as the event's
    `Batch` is queued somewhere: the answer is the state at the event, never reused for the next.
    Design after Hasura's multiplexed subscriptions (one query for a batch of subscribers)."""

    __slots__ = ("_loads", "_values")

    def __init__(self) -> None:
        self._loads: dict[str, asyncio.Future[Any]] = {}
        self._values: dict[str, Any] = {}

    def value(self, key: str, make: Callable[[], T]) -> T:
        """The one value under `key` (made by the first caller): loaders the subscribers of
        the event share, say."""
        if key not in self._values:
            self._values[key] = make()
        return cast(T, self._values[key])

    async def once(self, key: str, load: Callable[[], Awaitable[T]]) -> T:
        future = self._loads.get(key)
        if future is None:
            future = self._loads[key] = asyncio.ensure_future(load())
            hold_until_done(future)  # it outlives a subscriber cancelled while it waits
        # Shielded: a subscriber cancelled while waiting leaves the load to the others.
        return cast(T, await asyncio.shield(future))


@dataclass(frozen=True)
class Batch:
    """Messages one transaction added to one conversation, in the order they were written; or,
    with `resync`, no ids: notifications may have been lost, the subscriber reads again.

    Every subscriber of the conversation gets the same Batch: `viewer_ids` are theirs at
    delivery (whose current state the event loads at once), `shared` the event's loads."""

    conversation_id: str
    message_ids: tuple[int, ...]
    resync: bool = False
    viewer_ids: frozenset[int] = field(default=frozenset(), compare=False)
    shared: Shared = field(default_factory=Shared, compare=False)


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

    def drain(self) -> None:
        """Forget the batches queued so far (for a consumer whose next read covers them, as
        `messageStream`'s does); raises the reason if the subscription has been ended."""
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, SubscriptionEnded):
                self._queue.put_nowait(item)
                raise item


# A feed wake-up that names no position: read whatever follows the last delivered one.
RESYNC = -1


@dataclass(frozen=True, slots=True)
class Wake:
    """A feed wake-up: the position the feed grew to (or `RESYNC`), and `round`, shared by
    every feed subscriber woken in the same turn of the event loop (whatever their user), so
    that they read their feeds, their viewers and what their changes point at together."""

    head: int
    round: Shared


class FeedSubscription:
    """Wake-ups for one subscriber of `viewer_id`'s feed: positions the feed has grown to, or
    `RESYNC`. `offer`, `end` and `next_head` behave as `Subscription`'s."""

    def __init__(self, viewer_id: int, queue_size: int) -> None:
        self.viewer_id = viewer_id
        self.queue_size = queue_size
        self._queue: asyncio.Queue[Wake | SubscriptionEnded] = asyncio.Queue(queue_size + 1)
        self.ended: SubscriptionEnded | None = None

    def offer(self, head: Wake) -> bool:
        if self.ended is not None:
            return False
        if self._queue.qsize() >= self.queue_size:
            self.end(SubscriberTooSlow(self.queue_size))
            return False
        self._queue.put_nowait(head)
        return True

    def end(self, reason: SubscriptionEnded) -> None:
        if self.ended is not None:
            return
        self.ended = reason
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(reason)

    async def next_head(self) -> Wake:
        """The next wake-up; raises the reason once the subscription has been ended."""
        item = await self._queue.get()
        if isinstance(item, SubscriptionEnded):
            self._queue.put_nowait(item)
            raise item
        return item

    def drain(self) -> None:
        """Forget the wake-ups queued so far (a read that starts now covers them); raises the
        reason if the subscription has been ended."""
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, SubscriptionEnded):
                self._queue.put_nowait(item)
                raise item


class Hub:
    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self._by_conversation: dict[str, set[Subscription]] = {}
        self._by_feed: dict[int, set[FeedSubscription]] = {}
        self._round: Shared | None = None

    def _feed_round(self) -> Shared:
        """The round of this turn of the event loop, ended (for later wake-ups) at the next."""
        if self._round is None:
            self._round = Shared()
            asyncio.get_running_loop().call_soon(self._end_round)
        return self._round

    def _end_round(self) -> None:
        self._round = None

    @property
    def subscriber_count(self) -> int:
        return sum(len(group) for group in self._by_conversation.values()) + sum(
            len(group) for group in self._by_feed.values()
        )

    def viewer_ids(self) -> set[int]:
        return {s.viewer_id for group in self._by_conversation.values() for s in group} | set(
            self._by_feed
        )

    def deliver_feed(self, user_id: int, head: int) -> None:
        """`user_id`'s feed has grown to `head` (committed)."""
        group = self._by_feed.get(user_id)
        if not group:
            return
        wake = Wake(head, self._feed_round())
        for subscription in list(group):
            if not subscription.offer(wake):
                logger.warning(
                    "ending a subscription to the feed of user %s: %s", user_id, subscription.ended
                )
                self._remove_feed(subscription)

    def resync(self) -> None:
        """Notifications may have been lost (the LISTEN connection came back): every
        subscriber reads again after the last thing it delivered (a feed's position, a
        conversation's message id)."""
        for conversation_id, conversation_group in list(self._by_conversation.items()):
            for conversation_subscription in list(conversation_group):
                if not conversation_subscription.offer(Batch(conversation_id, (), resync=True)):
                    self._remove(conversation_subscription)
        wake = Wake(RESYNC, self._feed_round()) if self._by_feed else None
        for group in list(self._by_feed.values()):
            for subscription in list(group):
                if wake is not None and not subscription.offer(wake):
                    self._remove_feed(subscription)

    @contextlib.asynccontextmanager
    async def subscribe_feed(self, *, viewer_id: int) -> AsyncIterator[FeedSubscription]:
        subscription = FeedSubscription(viewer_id, self.queue_size)
        self._by_feed.setdefault(viewer_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            self._remove_feed(subscription)

    def _remove_feed(self, subscription: FeedSubscription) -> None:
        group = self._by_feed.get(subscription.viewer_id)
        if group is None:
            return
        group.discard(subscription)
        if not group:
            del self._by_feed[subscription.viewer_id]

    def deliver(self, conversation_id: str, message_ids: Sequence[int]) -> None:
        group = self._by_conversation.get(conversation_id)
        if not group or not message_ids:
            return
        batch = Batch(
            conversation_id,
            tuple(message_ids),
            viewer_ids=frozenset(subscription.viewer_id for subscription in group),
        )
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
        for user_id in gone & set(self._by_feed):
            for feed_subscription in list(self._by_feed[user_id]):
                feed_subscription.end(ViewerGone(user_id))
                self._remove_feed(feed_subscription)
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
