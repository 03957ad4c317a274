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
from typing import Any, Generic, TypeVar, cast

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


Item = TypeVar("Item")


class Mailbox(Generic[Item]):
    """Items for one consumer, unbounded, in a list, with a future made only while the
    consumer waits: what an `asyncio.Queue` does for one reader without its three deques and
    event (~2.6 KiB; issue 17, where every subscription and every socket holds one, most of
    them idle). `put_nowait`, `get`, `empty` and `qsize` as a queue's."""

    __slots__ = ("_waiter", "items")

    def __init__(self) -> None:
        self.items: list[Item] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Item) -> None:
        self.items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until an item is there."""
        while not self.items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    async def get(self) -> Item:
        await self.wait()
        return self.items.pop(0)

    def empty(self) -> bool:
        return not self.items

    def qsize(self) -> int:
        return len(self.items)


class Queued(Generic[Item]):
    """A subscriber's bounded queue of `Item`s (a conversation's `Batch`es, a feed's `Wake`s),
    with the reason it was ended (`SubscriptionEnded`) always last once it is: the one
    mechanism behind both kinds of subscription, over a `Mailbox`."""

    __slots__ = ("_box", "ended", "queue_size", "viewer_id")

    def __init__(self, viewer_id: int, queue_size: int) -> None:
        self.viewer_id = viewer_id
        self.queue_size = queue_size
        self._box: Mailbox[Item | SubscriptionEnded] = Mailbox()
        self.ended: SubscriptionEnded | None = None

    def offer(self, item: Item) -> bool:
        """Queue an item; False (and the subscription ended) when the consumer is too slow."""
        if self.ended is not None:
            return False
        if self._box.qsize() >= self.queue_size:
            self.end(SubscriberTooSlow(self.queue_size))
            return False
        self._box.put_nowait(item)
        return True

    def end(self, reason: SubscriptionEnded) -> None:
        """End it: what was queued is dropped, and the consumer gets `reason` next."""
        if self.ended is not None:
            return
        self.ended = reason
        self._box.items.clear()
        self._box.put_nowait(reason)

    async def next(self) -> Item:
        """The next item; raises the reason once the subscription has been ended."""
        await self._box.wait()
        item = self._box.items[0]
        if isinstance(item, SubscriptionEnded):
            raise item  # and stays, for any later call
        del self._box.items[0]
        return item

    def drain(self) -> Item | None:
        """Forget the items queued so far (for a consumer whose next read covers them, as
        `messageStream`'s does) and return the last of them (None: there were none); raises
        the reason if the subscription has been ended."""
        last: Item | None = None
        for item in self._box.items:
            if not isinstance(item, SubscriptionEnded):
                last = item
        self._box.items.clear()
        if self.ended is not None:
            self._box.items.append(self.ended)
            raise self.ended
        return last


class Subscription(Queued[Batch]):
    """Batches of one conversation's events for one subscriber of `viewer_id`."""

    __slots__ = ("conversation_id",)

    def __init__(self, conversation_id: str, viewer_id: int, queue_size: int) -> None:
        super().__init__(viewer_id, queue_size)
        self.conversation_id = conversation_id

    async def next_batch(self) -> Batch:
        return await self.next()


# A feed wake-up that names no position: read whatever follows the last delivered one.
RESYNC = -1


@dataclass(frozen=True, slots=True)
class Wake:
    """A feed wake-up: the position the feed grew to (or `RESYNC`), and `round`, shared by
    every feed subscriber woken in the same turn of the event loop (whatever their user), so
    that they read their feeds, their viewers and what their changes point at together."""

    head: int
    round: Shared


class FeedSubscription(Queued[Wake]):
    """Wake-ups for one subscriber of `viewer_id`'s feed: positions the feed has grown to, or
    `RESYNC`."""

    __slots__ = ()

    async def next_head(self) -> Wake:
        return await self.next()


Key = TypeVar("Key", str, int)
Sub = TypeVar("Sub", Subscription, FeedSubscription)


def _join(groups: dict[Key, set[Sub]], key: Key, subscription: Sub) -> None:
    groups.setdefault(key, set()).add(subscription)


def _leave(groups: dict[Key, set[Sub]], key: Key, subscription: Sub) -> None:
    group = groups.get(key)
    if group is None:
        return
    group.discard(subscription)
    if not group:
        del groups[key]


class Hub:
    """The process's subscribers: of conversations (`messageAdded`, `messageStream`, keyed by
    conversation or stream) and of users' feeds (`changes`). Delivery offers each subscriber
    the one shared item of its event; one whose queue is full is ended and dropped."""

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

    @staticmethod
    def _offer(groups: dict[Key, set[Sub]], key: Key, item: Any, what: str) -> None:
        """Offer `item` (one for all) to every subscriber of `key`; one too slow to take it is
        ended (`Queued.offer`), logged and dropped."""
        for subscription in list(groups.get(key, ())):
            if not subscription.offer(item):
                logger.warning(
                    "ending a subscription to %s of user %s: %s",
                    what,
                    subscription.viewer_id,
                    subscription.ended,
                )
                _leave(groups, key, subscription)

    def deliver_feed(self, user_id: int, head: int) -> None:
        """`user_id`'s feed has grown to `head` (committed)."""
        if user_id in self._by_feed:
            self._offer(self._by_feed, user_id, Wake(head, self._feed_round()), "a feed")

    def deliver(self, conversation_id: str, message_ids: Sequence[int]) -> None:
        """Messages committed to `conversation_id`, in commit order; no ids: who may see the
        conversation changed (a transfer, a deletion), and each subscriber checks again."""
        group = self._by_conversation.get(conversation_id)
        if group:
            viewer_ids = frozenset(subscription.viewer_id for subscription in group)
            batch = Batch(conversation_id, tuple(message_ids), viewer_ids=viewer_ids)
            self._offer(self._by_conversation, conversation_id, batch, conversation_id)

    def resync(self) -> None:
        """Notifications may have been lost (the LISTEN connection came back): every
        subscriber reads again after the last thing it delivered (a feed's position, a
        conversation's message id)."""
        for conversation_id in list(self._by_conversation):
            batch = Batch(conversation_id, (), resync=True)
            self._offer(self._by_conversation, conversation_id, batch, conversation_id)
        wake = Wake(RESYNC, self._feed_round()) if self._by_feed else None
        for user_id in list(self._by_feed):
            self._offer(self._by_feed, user_id, wake, "a feed")

    def end_for_viewers(self, viewer_ids: Iterable[int]) -> None:
        gone = set(viewer_ids)
        for user_id in gone & set(self._by_feed):
            for feed_subscription in list(self._by_feed[user_id]):
                feed_subscription.end(ViewerGone(user_id))
                _leave(self._by_feed, user_id, feed_subscription)
        for conversation_id, group in list(self._by_conversation.items()):
            for subscription in list(group):
                if subscription.viewer_id in gone:
                    subscription.end(ViewerGone(subscription.viewer_id))
                    _leave(self._by_conversation, conversation_id, subscription)

    @contextlib.asynccontextmanager
    async def subscribe_feed(self, *, viewer_id: int) -> AsyncIterator[FeedSubscription]:
        subscription = FeedSubscription(viewer_id, self.queue_size)
        _join(self._by_feed, viewer_id, subscription)
        try:
            yield subscription
        finally:
            _leave(self._by_feed, viewer_id, subscription)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, conversation_id: str, *, viewer_id: int
    ) -> AsyncIterator[Subscription]:
        subscription = Subscription(conversation_id, viewer_id, self.queue_size)
        _join(self._by_conversation, conversation_id, subscription)
        try:
            yield subscription
        finally:
            _leave(self._by_conversation, conversation_id, subscription)
