"""The broker on both backends: delivery after commit only, in order, fanned out by conversation."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette

from db import messages as message_data
from db.models import MessageRole
from realtime.hub import Batch, Hub, SubscriberTooSlow, Subscription, ViewerGone
from realtime.postgres import MAX_PAYLOAD_BYTES, decode, encode
from tests.factories import Sessionmaker, make_conversation, make_user

CONVERSATION = "5f0c3c2e-2f6e-4f43-9d0e-2b8d8c1f6a11"


class Rollback(Exception):
    """Raised inside a transaction to roll it back."""


async def write(
    app: Starlette, sessionmaker: Sessionmaker, conversation: str, contents: list[str]
) -> list[int]:
    """Store messages and publish them, in one transaction, as the mutations do."""
    broker = app.state.services.broker
    ids = []
    async with sessionmaker() as session, session.begin():
        for content in contents:
            row, _ = await message_data.add_message(
                session,
                conversation_id=conversation,
                role=MessageRole.USER,
                content=content,
                client_id=None,
            )
            ids.append(row.id)
        await broker.publish(session, conversation_id=conversation, message_ids=ids)
    return ids


async def next_batch(subscription: Subscription) -> Batch:
    return await asyncio.wait_for(subscription.next_batch(), 5)


async def test_committed_messages_reach_only_the_subscribers_of_their_conversation(
    app: Starlette, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    first = await make_conversation(sessionmaker, owner_id=user)
    second = await make_conversation(sessionmaker, owner_id=user)
    hub: Hub = app.state.services.broker.hub
    async with (
        hub.subscribe(first, viewer_id=user) as a,
        hub.subscribe(first, viewer_id=user) as b,
        hub.subscribe(second, viewer_id=user) as c,
    ):
        ids = await write(app, sessionmaker, first, ["x", "y"])
        other = await write(app, sessionmaker, second, ["z"])
        received = [await next_batch(a), await next_batch(b), await next_batch(c)]
    assert received == [
        Batch(first, tuple(ids)),
        Batch(first, tuple(ids)),
        Batch(second, (*other,)),
    ]
    assert hub.subscriber_count == 0


async def test_a_rolled_back_message_is_never_delivered(
    app: Starlette, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    hub: Hub = app.state.services.broker.hub
    broker = app.state.services.broker
    async with hub.subscribe(conversation, viewer_id=user) as subscription:
        with pytest.raises(Rollback):
            async with sessionmaker() as session, session.begin():
                row, _ = await message_data.add_message(
                    session,
                    conversation_id=conversation,
                    role=MessageRole.USER,
                    content="never",
                    client_id=None,
                )
                await broker.publish(session, conversation_id=conversation, message_ids=[row.id])
                raise Rollback()
        # What arrives first is the next committed message: the rolled-back one never does.
        ids = await write(app, sessionmaker, conversation, ["committed"])
        received = await next_batch(subscription)
    assert received == Batch(conversation, tuple(ids))


async def test_transactions_are_delivered_in_commit_order(
    app: Starlette, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    hub: Hub = app.state.services.broker.hub
    async with hub.subscribe(conversation, viewer_id=user) as subscription:
        written = [await write(app, sessionmaker, conversation, [f"m{i}"]) for i in range(20)]
        received = [await next_batch(subscription) for _ in range(20)]
    assert received == [Batch(conversation, tuple(ids)) for ids in written]


@pytest.mark.postgres_only
async def test_a_thousand_ids_in_one_transaction_arrive_in_order_despite_the_notify_limit(
    app: Starlette, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    hub: Hub = app.state.services.broker.hub
    async with hub.subscribe(conversation, viewer_id=user) as subscription:
        ids = await write(app, sessionmaker, conversation, [f"m{i}" for i in range(1000)])
        received: list[int] = []
        while len(received) < len(ids):
            received.extend((await next_batch(subscription)).message_ids)
    assert received == ids


def test_long_id_lists_are_split_into_payloads_under_the_limit() -> None:
    ids = list(range(10**12, 10**12 + 2000))
    payloads = encode(CONVERSATION, ids)
    decoded = [decode(payload) for payload in payloads]
    assert len(payloads) > 1
    assert all(len(payload.encode()) <= MAX_PAYLOAD_BYTES for payload in payloads)
    assert {conversation for conversation, _ in decoded} == {CONVERSATION}
    assert [i for _, chunk in decoded for i in chunk] == ids


async def test_a_subscriber_that_falls_behind_is_ended_and_its_queue_dropped() -> None:
    hub = Hub(queue_size=2)
    async with hub.subscribe(CONVERSATION, viewer_id=1) as slow:
        for message_id in range(3):
            hub.deliver(CONVERSATION, [message_id])
        with pytest.raises(SubscriberTooSlow) as raised:
            await slow.next_batch()
        with pytest.raises(SubscriberTooSlow):
            await slow.next_batch()
        assert (raised.value.queue_size, hub.subscriber_count) == (2, 0)


async def test_ending_a_viewers_subscriptions_leaves_the_others() -> None:
    hub = Hub(queue_size=10)
    async with (
        hub.subscribe(CONVERSATION, viewer_id=1) as gone,
        hub.subscribe(CONVERSATION, viewer_id=2) as kept,
    ):
        hub.end_for_viewers([1])
        hub.deliver(CONVERSATION, [7])
        with pytest.raises(ViewerGone):
            await gone.next_batch()
        assert await kept.next_batch() == Batch(CONVERSATION, (7,))
        assert hub.viewer_ids() == {2}
